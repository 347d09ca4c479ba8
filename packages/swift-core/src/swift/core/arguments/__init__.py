"""Arguments: dataclass groups parsed from flags and `--config file.yaml`."""

from swift.core.arguments.groups import DataArgs, ModelArgs, TemplateArgs
from swift.core.arguments.parser import arg, collect_flags, format_help, parse_args, to_flat_dict

__all__ = ["DataArgs", "ModelArgs", "TemplateArgs", "arg", "collect_flags", "format_help", "parse_args", "to_flat_dict"]
