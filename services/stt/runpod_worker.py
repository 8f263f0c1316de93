"""``python -m services.stt.runpod_worker [--rp_serve_api ...]``: the stt service as a RunPod serverless worker."""

from services.runtime.runpod_worker import main

if __name__ == "__main__":
    raise SystemExit(main(default_role="stt"))
