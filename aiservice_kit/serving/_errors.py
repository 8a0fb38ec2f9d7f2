"""The one exception the serving layer raises for a request it refuses."""


class ServingError(Exception):
    """A request error that becomes `{"error": message}` with a status code.

    Args:
        message: str. What went wrong and what was expected.
        status_code: int. The HTTP status (TF Serving's mapping: invalid
            argument 400, not found 404, permission denied 403, resource
            exhausted 429, unavailable 503).
        headers: dict or None. Extra response headers (e.g. Retry-After).
    """

    def __init__(
        self,
        message: str,
        status_code: int = 400,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.headers = headers or {}
