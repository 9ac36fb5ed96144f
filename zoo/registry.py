"""One registry maps model names to their classes (timm-style): the CLI, tests and presets read it."""

import inspect

import keras

from zoo.errors import ZooError, unknown_name

_MODELS = {}


def register_model(name):
    """Class decorator: `zoo.create(name, ...)` builds it, `list_models()` lists it, `load_model` finds it."""

    def add(cls):
        if name in _MODELS:
            raise RuntimeError(f"model name {name!r} is registered twice")
        _MODELS[name] = cls
        cls.registry_name = name
        return keras.saving.register_keras_serializable(package="zoo")(cls)

    return add


def list_models():
    """Names of every registered model, sorted."""
    return sorted(_MODELS)


def model_class(name):
    """The class registered as `name`; a ZooError listing the valid names otherwise."""
    if name not in _MODELS:
        raise unknown_name("model", name, _MODELS)
    return _MODELS[name]


def model_options(cls):
    """Constructor options of a model class with their defaults (`input_shape` excluded), its zoo
    base classes' options included (the penalties every plain autoencoder takes)."""
    options = {}
    for klass in reversed(cls.__mro__):
        if klass.__module__.startswith("zoo.") and "__init__" in vars(klass):
            params = inspect.signature(klass.__init__).parameters
            options.update({
                key: p.default
                for key, p in params.items()
                if key not in ("self", "input_shape") and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            })
    return options


def check_options(cls, config):
    """Refuses keys `cls` does not take, naming them and the valid ones."""
    valid = set(model_options(cls)) | {"input_shape", "name", "dtype", "trainable"}
    unknown = sorted(set(config) - valid)
    if unknown:
        raise ZooError(
            f"{cls.registry_name} has no option {', '.join(map(repr, unknown))}; "
            f"valid options: {', '.join(sorted(valid - {'name', 'trainable'}))}"
        )


def create(name, input_shape, latent_dim=None, **config):
    """Builds the model registered as `name` for inputs of shape `input_shape` (no batch axis).

    Example:
        >>> model = zoo.create("conv_ae", input_shape=(28, 28, 1), latent_dim=16)
        >>> model.encode(x).shape  # (n, 16)
    """
    cls = model_class(name)
    if latent_dim is not None:
        config["latent_dim"] = latent_dim
    check_options(cls, config)
    return cls(input_shape=input_shape, **config)
