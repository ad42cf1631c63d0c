"""The error for an optional package that is not installed."""


class MissingPackageException(BaseException):
    def __init__(self, package: str) -> None:
        super().__init__(package)
        self.package = package

    def __str__(self) -> str:
        return (
            f"Unable to import `{self.package}`. You have to install the `{self.package}` package."
        )
