"""`swift export`: merge LoRA, quantize (GPTQ, AWQ, FP8, bitsandbytes), GGUF + Ollama, push to the hub.

Every export but a plain merge writes quant_report.json: how much of the unquantized model it kept.
"""

from swift.train.export.run import ExportResult, run_export

__all__ = ["ExportResult", "run_export"]
