"""`swift deploy`: an OpenAI-compatible HTTP server over any `InferEngine` (FastAPI + uvicorn), one module per
endpoint under `routes/`."""
