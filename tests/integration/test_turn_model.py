"""Smart Turn v3.2 for real, in the STT venv as the service runs it: our features match the reference
extractor in the pipecat-ai wheel, and the model tells finished sentences from unfinished ones
(Piper speech, 0.2 s of silence after it, as the stream asks at a pause).

Piper ends every phrase with a falling, final-sounding tone, so its unfinished phrases are the ones a
person would leave hanging with a filler or a conjunction; "I'd like to book a table for" alone
sounds finished to the model (0.96) in Piper's voice; "So what I was thinking is that" does not (0.06).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from services.stt.smart_turn import TurnModelMissing, locate
from tests.helpers.service_process import service_python
from tests.helpers.speech import convert, speech_bytes
from tests.helpers.stack import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

COMPLETE = ["What time does the museum open tomorrow?", "Please book a table for four people at seven."]
UNFINISHED = [
    "I'd like to book a table for um", "So what I was thinking is that", "So I was wondering if", "My name is, uh",
]


def probe(tmp_path: Path, texts: list[str]) -> dict[str, object]:
    files = []
    for i, text in enumerate(texts):
        pcm = convert(speech_bytes(text), 16000, 1).data + bytes(int(0.2 * 16000) * 2)
        path = tmp_path / f"{i}.pcm"
        path.write_bytes(pcm)
        files.append(str(path))
    run = subprocess.run(
        [str(service_python("stt")), "-m", "tests.helpers.turn_model_probe", *files],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result: dict[str, object] = json.loads(run.stdout.strip().splitlines()[-1])
    return result


def test_the_model_tells_finished_from_unfinished(tmp_path: Path) -> None:
    result = probe(tmp_path, COMPLETE + UNFINISHED)
    p = result["probabilities"]
    assert isinstance(p, list)
    done, open_ = p[: len(COMPLETE)], p[len(COMPLETE) :]
    seen = dict(zip(COMPLETE + UNFINISHED, p, strict=True))
    assert all(x > 0.5 for x in done) and all(x < 0.5 for x in open_), seen
    assert float(result["max_feature_diff"]) < 1e-3  # type: ignore[arg-type]
    ms = result["ms"]
    assert isinstance(ms, list)
    print("turn model P(complete):", seen, "ms per call:", np.median(ms))


def test_a_wrong_model_path_says_what_to_do(tmp_path: Path) -> None:
    expected = r"no end-of-turn model at .*missing\.onnx; set options\.turn\.model_path"
    with pytest.raises(TurnModelMissing, match=expected):
        locate(str(tmp_path / "missing.onnx"))


def test_loading_from_a_wrong_path_in_the_stt_venv_says_what_to_do(tmp_path: Path) -> None:
    """The service's own call (TurnModel.load, onnxruntime imported) fails with TurnModelMissing, not an ORT error."""
    missing = tmp_path / "missing.onnx"
    code = (
        "import sys\n"
        "from services.stt.smart_turn import TurnModel, TurnModelMissing\n"
        "try:\n"
        "    TurnModel.load(sys.argv[1])\n"
        "except TurnModelMissing as e:\n"
        "    print('missing:', e)\n"
    )
    run = subprocess.run(
        [str(service_python("stt")), "-c", code, str(missing)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.startswith(f"missing: no end-of-turn model at {missing}; set options.turn.model_path"), run.stdout
