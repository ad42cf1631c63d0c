"""Types shared by the API's modules."""

from pathlib import Path

GenericPath = Path | str
