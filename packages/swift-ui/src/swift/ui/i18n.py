"""Every label of the pages in English and Chinese. Flag names are shown as they are typed (`--model`) in both."""

from __future__ import annotations

from swift.core import ConfigError
from swift.ui.env import ui_lang

LANGS = ("en", "zh")

STRINGS: dict[str, dict[str, str]] = {
    "title": {"en": "Swift: fine-tune, chat, evaluate, export", "zh": "Swift：微调、对话、评测、导出"},
    "app_title": {"en": "Swift chat", "zh": "Swift 对话"},
    "tab_sft": {"en": "Train (sft / pt)", "zh": "训练 (sft / pt)"},
    "tab_rlhf": {"en": "RLHF", "zh": "人类对齐 (RLHF)"},
    "tab_infer": {"en": "Chat", "zh": "对话推理"},
    "tab_export": {"en": "Export (merge)", "zh": "导出 (合并)"},
    "tab_eval": {"en": "Evaluate", "zh": "评测"},
    "train_kind": {"en": "Command", "zh": "命令"},
    "basic": {"en": "Main settings", "zh": "主要设置"},
    "more": {"en": "More settings", "zh": "更多设置"},
    "command": {"en": "Command that Start runs", "zh": "点击开始后运行的命令"},
    "start": {"en": "Start", "zh": "开始"},
    "stop": {"en": "Stop", "zh": "停止"},
    "refresh": {"en": "Refresh runs", "zh": "刷新运行列表"},
    "runs": {"en": "Runs (found on disk)", "zh": "运行记录（从磁盘读取）"},
    "status": {"en": "Status", "zh": "状态"},
    "log": {"en": "Log (live)", "zh": "日志（实时）"},
    "loss_plot": {"en": "Training loss", "zh": "训练损失"},
    "default": {"en": "default", "zh": "默认值"},
    "none": {"en": "none", "zh": "无"},
    "running": {"en": "running", "zh": "运行中"},
    "finished": {"en": "finished", "zh": "已结束"},
    "stopped": {"en": "stopped", "zh": "已停止"},
    "no_run": {"en": "no run selected", "zh": "未选择运行"},
    "missing_pkg": {"en": "This tab needs {package}. Install it with: {line}",
                    "zh": "此页需要 {package}，请安装：{line}"},
    "chat_input": {"en": "Message (Enter sends)", "zh": "输入消息（回车发送）"},
    "chatbot": {"en": "Conversation", "zh": "对话"},
    "image": {"en": "Image (vision models: sent with the next message)", "zh": "图片（多模态模型：随下一条消息发送）"},
    "system": {"en": "System prompt", "zh": "系统提示词"},
    "send": {"en": "Send", "zh": "发送"},
    "clear": {"en": "Clear", "zh": "清空"},
    "sampling": {"en": "Sampling", "zh": "采样参数"},
    "temperature": {"en": "Temperature (0: greedy)", "zh": "温度（0 为贪心）"},
    "top_p": {"en": "Top-p", "zh": "Top-p 采样"},
    "max_new_tokens": {"en": "Longest answer (tokens)", "zh": "最长回答（词元数）"},
    "thinking": {"en": "Thinking", "zh": "思考过程"},
    "tool_call": {"en": "Tool call: {name}", "zh": "工具调用：{name}"},
    "load_model": {"en": "Load model", "zh": "加载模型"},
    "model_loaded": {"en": "Serving {model}", "zh": "正在服务 {model}"},
    "model_not_loaded": {"en": "Give a model and press Load model", "zh": "请填写模型并点击加载模型"},
    "error": {"en": "Error: {error}", "zh": "错误：{error}"},
}

# Chinese help for the flags users set most; others keep their English help (the flag name is shown either way).
FLAG_HELP_ZH: dict[str, str] = {
    "model": "模型 ID 或本地目录",
    "dataset": "训练数据集（文件、目录或数据集名，可加 #N 取前 N 行）",
    "val_dataset": "验证数据集",
    "train_type": "训练方式（lora、full 等）",
    "max_steps": "最多训练步数（大于 0 时覆盖轮数）",
    "num_train_epochs": "训练轮数",
    "save_steps": "每隔多少步保存检查点",
    "output_dir": "输出目录",
    "learning_rate": "学习率",
    "lora_rank": "LoRA 秩",
    "lora_alpha": "LoRA 缩放系数 alpha",
    "per_device_train_batch_size": "每个设备每步的样本数",
    "gradient_accumulation_steps": "梯度累积步数",
    "max_length": "每条样本的最大词元数",
    "logging_steps": "每隔多少步记录指标",
    "system": "默认系统提示词",
    "template": "对话模板",
    "rlhf_type": "对齐方法",
    "adapters": "LoRA 检查点目录",
    "ckpt_dir": "检查点目录",
    "merge_lora": "把 LoRA 合并进基座模型",
    "eval_dataset": "评测数据集",
    "dataset_args": "数据集参数（JSON）",
    "eval_limit": "每个子集评测的行数",
    "eval_url": "评测这个 OpenAI 兼容服务",
    "eval_output_dir": "评测结果目录",
    "infer_backend": "推理引擎",
}


def resolve_lang(flag: str | None) -> str:
    lang = flag or ui_lang() or "en"
    if lang not in LANGS:
        raise ConfigError(f"SWIFT_UI_LANG={lang!r}: give en or zh")
    return lang


def t(key: str, lang: str, **values: str) -> str:
    text = STRINGS[key][lang]
    return text.format(**values) if values else text


def flag_help(name: str, english: str, lang: str) -> str:
    return FLAG_HELP_ZH.get(name, english) if lang == "zh" else english
