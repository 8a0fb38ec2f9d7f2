"""scikit-learn's parameter API, without importing scikit-learn.

`sklearn.base` pulls in scipy.stats and more: about 65 MB and 1.2 s at
import, more than the recommender itself needs on mid-sized data. The
contract it defines is small and duck-typed (`sklearn.base.clone` and
the model-selection tools call only `get_params` and `set_params`), so
the recommenders implement it here instead of inheriting it.
"""

import inspect
from typing import Any


class ParamsMixin:
    """`get_params`, `set_params` and a `repr` of the changed parameters.

    As in scikit-learn, the parameters are the keyword arguments of
    `__init__`, which stores each one unchanged under its own name.

    Example:
    ```python
    from sklearn.base import clone
    from aiservice_kit import CosineRecommender

    model = CosineRecommender(n_neighbors=50)
    other = clone(model).set_params(kind="user")
    ```
    """

    @classmethod
    def _param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        return sorted(
            name
            for name, parameter in signature.parameters.items()
            if name != "self"
            and parameter.kind
            not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
        )

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Returns the constructor parameters.

        Args:
            deep: bool. Accepted for scikit-learn compatibility; these
                estimators hold no sub-estimators.

        Returns:
            A dict of parameter name to value.
        """
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> Any:
        """Sets constructor parameters; they are checked by the next `fit`.

        Returns:
            self.

        Raises:
            ValueError: on a name that is not a constructor parameter.
        """
        valid = self._param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(
                    f"Invalid parameter {name!r} for "
                    f"{type(self).__name__}. Accepted: {', '.join(valid)}"
                )
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = inspect.signature(type(self).__init__).parameters
        changed = [
            f"{name}={value!r}"
            for name, value in self.get_params().items()
            if value is not defaults[name].default
            and value != defaults[name].default
        ]
        return f"{type(self).__name__}({', '.join(changed)})"
