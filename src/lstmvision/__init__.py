"""lstmvision: LSTM-based vision backbones (Sequencer, Vision-LSTM) with weights, training and analyses.

The public names below are imported on first use (PEP 562), so that `import lstmvision` (and the command line's
`--help`) does not load torch.

Importing lstmvision also makes its models creatable by `timm.create_model(NAME)` (so timm's scripts,
transformers' TimmWrapper / TimmBackbone and segmentation_models_pytorch's `tu-` encoders find them): when timm is
already imported they are registered at once, otherwise as soon as timm is imported, by a `sys.meta_path` finder
that runs the registration after timm's (and lstmvision's own) modules have finished loading. Names timm already
has (sequencer2d_s/m/l) stay timm's."""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import threading
import warnings
from types import ModuleType
from typing import TYPE_CHECKING, Any, Sequence

__version__ = "0.1.0"

_PUBLIC = {
    "Classifier": "lstmvision.inference",
    "Prediction": "lstmvision.inference",
    "WeightsError": "lstmvision.weights",
    "create_model": "lstmvision.models",
    "get_pretrained_cfg": "lstmvision.models",
    "list_models": "lstmvision.models",
    "list_pretrained": "lstmvision.models",
    "push_to_hf_hub": "lstmvision.models",
    "save_for_hf": "lstmvision.models.hub",
    "register_timm": "lstmvision.models",
    "load_pretrained": "lstmvision.weights",
    "save_pretrained": "lstmvision.weights",
}
__all__ = [
    "Classifier", "Prediction", "WeightsError", "create_model", "get_pretrained_cfg", "list_models",
    "list_pretrained", "load_pretrained", "push_to_hf_hub", "register_timm", "save_for_hf", "save_pretrained",
]

if TYPE_CHECKING:
    from lstmvision.inference import Classifier, Prediction
    from lstmvision.models import (
        create_model,
        get_pretrained_cfg,
        list_models,
        list_pretrained,
        push_to_hf_hub,
        register_timm,
    )
    from lstmvision.models.hub import save_for_hf
    from lstmvision.weights import WeightsError, load_pretrained, save_pretrained


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'lstmvision' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)


# ------------------------------------------------------------------------ registration in timm at import
_loading = threading.local()  # .depth: how many imports that went through _RegisteringLoader are running


def _initializing(module: ModuleType | None) -> bool:
    return bool(getattr(getattr(module, "__spec__", None), "_initializing", False))


def _can_register(done: ModuleType | None = None) -> bool:
    """timm is fully imported and no import is half-way through (registering imports lstmvision.models, which
    imports torchvision and segmentation_models_pytorch: done inside one of their imports, or inside one of
    lstmvision's own, it would import them into a circle). `done`: a module whose code has just run to its end."""
    timm = sys.modules.get("timm")
    if timm is None or (timm is not done and _initializing(timm)) or getattr(_loading, "depth", 0):
        return False
    return not any(m is not done and _initializing(m) for n, m in list(sys.modules.items())
                   if n.startswith("lstmvision."))


def _register_in_timm() -> None:
    """Register lstmvision's models in timm's registry; a failure is a warning, never a failed import."""
    _RegisteringFinder.uninstall()
    try:
        # the plain names, then NAME_pyramid (features_only gives a 4/8/16/32 pyramid: smp's tu- encoders)
        importlib.import_module("lstmvision.models.timm_pyramids").register_timm_pyramids()
    except Exception as e:  # noqa: BLE001 (an import of timm must not fail because of lstmvision)
        warnings.warn(f"lstmvision could not register its models in timm ({type(e).__name__}: {e}); "
                      "call lstmvision.register_timm() to see why", stacklevel=2)


class _RegisteringLoader(importlib.abc.Loader):
    """A module's own loader, which runs it; once the outermost import has finished and timm is imported, the
    registration follows."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def __getattr__(self, name: str) -> Any:  # get_resource_reader, is_package, get_code, ... of the real loader
        return getattr(self._loader, name)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def _restore(self, module: ModuleType) -> None:
        """The real loader back into the module's spec and `__loader__` (for reloads and resource look-ups);
        modules that refuse attribute writes (torch's config modules) keep the delegating one."""
        try:
            if getattr(module.__spec__, "loader", None) is self:
                module.__spec__.loader = self._loader
            if module.__dict__.get("__loader__") is self:
                module.__loader__ = self._loader
        except Exception:  # noqa: BLE001, S110 (a module class may forbid either write)
            pass

    def exec_module(self, module: ModuleType) -> None:
        _loading.depth = getattr(_loading, "depth", 0) + 1
        try:
            self._loader.exec_module(module)
        finally:
            _loading.depth -= 1
            self._restore(module)
        if _RegisteringFinder.installed() and _can_register(done=module):
            _register_in_timm()


class _RegisteringFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: gives each module spec, as the other finders make it, a `_RegisteringLoader`.
    Installed by `import lstmvision` while timm is not imported yet; removed once the models are registered."""

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None) -> Any:
        for finder in sys.meta_path:
            if isinstance(finder, _RegisteringFinder) or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if hasattr(spec.loader, "exec_module") and not isinstance(spec.loader, _RegisteringLoader):
                    spec.loader = _RegisteringLoader(spec.loader)
                return spec
        return None

    @staticmethod
    def installed() -> bool:
        return any(isinstance(f, _RegisteringFinder) for f in sys.meta_path)

    @staticmethod
    def install() -> None:
        if not _RegisteringFinder.installed():
            sys.meta_path.insert(0, _RegisteringFinder())

    @staticmethod
    def uninstall() -> None:
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _RegisteringFinder)]


if _can_register():
    _register_in_timm()
else:
    _RegisteringFinder.install()
