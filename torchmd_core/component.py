"""What every pluggable component shares.

That is a nested pydantic ``Config`` with a ``kind``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Component", "ComponentConfig"]


class ComponentConfig(BaseModel):
    """Base of every component configuration.

    Subclasses narrow ``kind`` to a ``Literal`` with a default: that name is what users
    write in a config file. Unknown keys are errors and values are frozen; every field
    states its unit in its description.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    kind: str = Field(description="Name of the component, as registered by its plugin.")


class Component:
    """Mixin for classes registered by plugins: it ties a class to its ``Config``."""

    Config: ClassVar[type[ComponentConfig]]

    @classmethod
    def kind_name(cls) -> str:
        """The name users write in a config (the default of ``Config.kind``)."""
        field = cls.Config.model_fields.get("kind")
        default = None if field is None else field.default
        if not isinstance(default, str) or not default:
            raise TypeError(
                f"{cls.__qualname__}.Config must give 'kind' a default name, e.g. "
                f'kind: Literal["my.kind"] = "my.kind"'
            )
        return default

    @classmethod
    def describe(cls) -> str:
        """First line of the class docstring (shown by ``tmd plugins``)."""
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""

    @classmethod
    def config_from(
        cls, config: ComponentConfig | dict[str, Any] | None
    ) -> ComponentConfig:
        """Validate ``config`` (a dict, the right model, or None for defaults)."""
        if config is None:
            return cls.Config.model_validate({})
        if isinstance(config, cls.Config):
            return config
        if isinstance(config, BaseModel):
            config = config.model_dump()
        return cls.Config.model_validate(config)
