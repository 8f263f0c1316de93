"""The multipart audio upload shared by the STT service's HTTP routes (/detect, OpenAI transcriptions)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request

from core.errors import InvalidArgument


@asynccontextmanager
async def audio_form(request: Request, *, max_fields: int, hint: str) -> AsyncIterator[tuple[FormData, UploadFile]]:
    """The parsed form and its ``file`` upload; closed on exit. ``hint`` ends the missing-file message."""
    try:
        form = await request.form(max_files=1, max_fields=max_fields)
    except HTTPException as e:
        raise InvalidArgument(f"could not read the multipart form: {e.detail}") from e
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidArgument(f"missing 'file': send multipart/form-data with the audio in a 'file' field{hint}")
        yield form, upload
    finally:
        await form.close()
