"""Arguments: dataclass groups parsed from flags and `--config file.yaml`."""

from swift.core.arguments.groups import DataArgs, ModelArgs, TemplateArgs, recorded_data_args
from swift.core.arguments.parser import Flag, arg, collect_flags, format_help, parse_args, to_flat_dict

__all__ = ["DataArgs", "Flag", "ModelArgs", "TemplateArgs", "arg", "collect_flags", "format_help", "parse_args",
           "recorded_data_args", "to_flat_dict"]
