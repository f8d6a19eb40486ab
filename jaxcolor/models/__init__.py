"""Model registry: `build(name, **kwargs)` returns a Flax Linen module.

Configs pick networks by these names. Every module is applied as
`module.apply(variables, x, train=...)` on NHWC inputs. Entries are imported
lazily so that building one network never imports the others' dependencies.
"""

import importlib
from typing import Any

import flax.linen as nn

# name -> "module:Class", relative to this package.
_REGISTRY: dict[str, str] = {
    "unet": "unet:UNetGenerator",
    "patchgan": "patchgan:PatchGANDiscriminator",
    "dla": "dla:DLAGenerator",
    "dcgan_discriminator": "dcgan:DCGANDiscriminator",
    "improver": "improver:PatchMLPImprover",
    "resnet18": "resnet:ResNet18",
    "resnet18_unet": "resnet_unet:ResNet18UNet",
    "iizuka": "iizuka:IizukaColorizer",
    "inception_fid": "inception:FIDInceptionV3",
}


def names() -> list[str]:
    """The registered network names, sorted."""
    return sorted(_REGISTRY)


def get_class(name: str) -> type[nn.Module]:
    """The module class registered under `name`."""
    if name not in _REGISTRY:
        raise ValueError(
            f"Unknown network {name!r}; registered networks: {', '.join(names())}.")
    module_name, class_name = _REGISTRY[name].split(":")
    module = importlib.import_module(f"{__name__}.{module_name}")
    return getattr(module, class_name)


def build(name: str, **kwargs: Any) -> nn.Module:
    """Builds the network registered under `name` with constructor `kwargs`.

    Raises:
      ValueError: unknown name, or a keyword the network does not take (the
        message names the network, the keyword and the keywords it takes).
    """
    cls = get_class(name)
    fields = {f for f in getattr(cls, "__dataclass_fields__", {})
              if f not in ("parent", "name")}
    unknown = sorted(set(kwargs) - fields)
    if unknown:
        raise ValueError(
            f"Network {name!r} takes no argument(s) {', '.join(unknown)}; "
            f"it takes: {', '.join(sorted(fields))}.")
    return cls(**kwargs)
