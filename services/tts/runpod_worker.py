"""``python -m services.tts.runpod_worker [--rp_serve_api ...]``: the tts service as a RunPod serverless worker."""

from services.runtime.runpod_worker import main

if __name__ == "__main__":
    raise SystemExit(main(default_role="tts"))
