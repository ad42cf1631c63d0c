"""Words in log lines and messages."""


def pluralize(text: str, count: int) -> str:
    return text if count == 1 else f"{text}s"
