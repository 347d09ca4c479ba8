"""One module per endpoint; `streaming.py` holds what the generation endpoints share."""
