"""Exceptions raised by aiservice_kit.

Each subclasses the built-in exception a caller would already catch, so
`except ValueError` keeps working.
"""


class NotFittedError(ValueError, AttributeError):
    """Raised when a stateful object is queried before `fit`.

    Subclasses `ValueError` and `AttributeError` for compatibility with
    scikit-learn's exception of the same name.

    Example:
    ```python
    from aiservice_kit import CosineRecommender, NotFittedError
    try:
        CosineRecommender().recommend(0)
    except NotFittedError as error:
        print(error)
    ```
    """


class ExportError(RuntimeError):
    """Raised when a model cannot be exported faithfully to a format.

    The message names the layer or signature at fault and the fix.
    """


class ExportMismatchError(ExportError):
    """Raised when an exported artifact disagrees with the Keras model."""
