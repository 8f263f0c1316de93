"""``python -m services.llm.runpod_worker [--rp_serve_api ...]``: the llm service as a RunPod serverless worker."""

from services.runtime.runpod_worker import main

if __name__ == "__main__":
    raise SystemExit(main(default_role="llm"))
