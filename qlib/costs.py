"""Model costs from real architecture configs: parameters and the agent/server FLOP split
(paper Sec. II-A/B and Sec. VI-A; the workloads N_FLOP and Ñ_FLOP of eqs. 4–7).

A model is built from its transformers config on PyTorch's *meta* device (shapes only: no
weights, no download, no memory) and one forward pass that produces the first output
token is run under :class:`torch.utils.flop_counter.FlopCounterMode`, which counts the
FLOPs of every matrix product, convolution and attention kernel (2 FLOPs per
multiply-accumulate) per module. The modules of the *vision side* (everything that turns
pixels into the embedding :math:`\\mathbf{o}` the agent sends, eq. 1) go to the agent and
give ``n_flop_agent``; the rest (the language model, eq. 2) goes to the server and gives
``n_flop_server``.

Shipped configs (``qlib/data/configs/*.json``, written from the hub's ``config.json`` of
each model, so everything works offline):

==================  ============================  ==========================================
name                hub id                        agent side (default split)
==================  ============================  ==========================================
``blip2-opt-2.7b``  Salesforce/blip2-opt-2.7b     ViT-g vision encoder + Q-Former + projection
``git-base``        microsoft/git-base            CLIP ViT-B/16 image encoder + projection
``git-base-vatex``  microsoft/git-base-vatex      same, on 6 frames with temporal embeddings
==================  ============================  ==========================================

Which inputs: ``n_frames`` video frames of ``image_size`` pixels (GIT-VaTeX: 6 by default,
the number of temporal embeddings it was trained with) and a text prompt of ``prompt_len``
tokens (1 by default: the BOS token a captioning prompt starts with; BLIP-2's 32 query
slots are added to it). The LM head is evaluated at the last position only when the model
allows it (``logits_to_keep=1``, what ``generate`` does), since only that position's logits
produce the first token.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import pathlib
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

__all__ = [
    "CONFIG_DIR",
    "SHIPPED_CONFIGS",
    "PAPER_COSTS",
    "AGENT_MODULE_NAMES",
    "ModelCosts",
    "load_config",
    "build_meta_model",
    "model_costs",
]

CONFIG_DIR = pathlib.Path(__file__).resolve().parent / "data" / "configs"

#: Short name -> hub id of the configs shipped in ``qlib/data/configs``.
SHIPPED_CONFIGS: dict[str, str] = {
    "blip2-opt-2.7b": "Salesforce/blip2-opt-2.7b",
    "git-base": "microsoft/git-base",
    "git-base-vatex": "microsoft/git-base-vatex",
}

#: The paper's figures (Sec. VI-A): parameters and "GFLOPs to generate the first token".
PAPER_COSTS: dict[str, dict[str, float]] = {
    "blip2-opt-2.7b": {"n_params": 3.75e9, "gflops": 533.66},
    "git-base": {"n_params": 176.62e6, "gflops": 212.27},
    "git-base-vatex": {"n_params": 176.62e6, "gflops": 212.27},
}

#: Module (or parameter) names that belong to the vision side, i.e. the agent, whatever
#: their depth in the model: BLIP-2 / InstructBLIP (vision_model, qformer, query_tokens,
#: language_projection), GIT (image_encoder, visual_projection, img_temperal_embedding, the
#: upstream spelling), LLaVA-style models (vision_tower, multi_modal_projector).
AGENT_MODULE_NAMES: frozenset[str] = frozenset({
    "vision_model", "vision_tower", "vision_encoder", "image_encoder", "visual",
    "qformer", "query_tokens", "language_projection", "visual_projection",
    "img_temperal_embedding", "img_temporal_embedding", "multi_modal_projector",
})


@dataclass(frozen=True)
class ModelCosts:
    """Parameter counts and the agent/server FLOP split of one model and input.

    Attributes
    ----------
    name : str
        Config name (short name, hub id or ``model_type``).
    n_params : int
        All parameters (tied weights once).
    n_params_agent, n_params_server : int
        Parameters on each side (:math:`q` and :math:`s` of eqs. 1–2).
    n_flop_agent : float
        Full-precision on-agent workload :math:`N_{\\mathrm{FLOP}}` of eq. (4), in FLOPs.
    n_flop_server : float
        On-server workload :math:`\\tilde N_{\\mathrm{FLOP}}` of eq. (5), in FLOPs.
    agent_modules, server_modules : tuple of str
        Dotted module/parameter names placed on each side.
    n_frames, prompt_len : int
        The input that was counted.
    server_positions : int
        Sequence length the server's language model processes (0 if it has none).
    head_last_position_only : bool
        Whether the LM head ran on the last position only.
    flops_by_module : dict
        FLOPs per placed module (the split's detail).
    """

    name: str
    n_params: int
    n_params_agent: int
    n_params_server: int
    n_flop_agent: float
    n_flop_server: float
    agent_modules: tuple[str, ...]
    server_modules: tuple[str, ...]
    n_frames: int
    prompt_len: int
    server_positions: int
    head_last_position_only: bool
    flops_by_module: dict[str, float] = field(default_factory=dict)

    @property
    def n_flop_total(self) -> float:
        """FLOPs of the whole first-token forward pass, agent plus server."""
        return self.n_flop_agent + self.n_flop_server


def _quiet_imports() -> None:
    """Import tqdm.auto once with its "IProgress not found" warning silenced: transformers
    imports it, and without ipywidgets the warning (with a file path) lands in notebooks."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="IProgress not found")
        import tqdm.auto  # noqa: F401


def _offline_error(name: str, exc: Exception) -> ValueError:
    shipped = ", ".join(repr(k) for k in SHIPPED_CONFIGS)
    return ValueError(
        f"cannot load the config of {name!r} (no network or no such model: {type(exc).__name__}); "
        f"pass one of the shipped names {shipped}, a path to a config.json, or a transformers config object."
    )


def load_config(name_or_config: Any) -> Any:
    """Return a transformers config for a short name, hub id, path, dict or config object.

    Parameters
    ----------
    name_or_config : str, path, dict or transformers.PretrainedConfig
        A shipped short name (``"blip2-opt-2.7b"``, ``"git-base"``, ``"git-base-vatex"``)
        or its hub id (both read the shipped JSON, offline); a path to a ``config.json``
        or a checkpoint folder; a dict with ``model_type``; a config object; or any other
        hub id (needs network).

    Raises
    ------
    ValueError
        For an unknown name that cannot be fetched (one sentence saying what to pass).
    """
    _quiet_imports()
    from transformers import AutoConfig, PretrainedConfig

    if isinstance(name_or_config, PretrainedConfig):
        return name_or_config
    if isinstance(name_or_config, dict):
        d = dict(name_or_config)
        if "model_type" not in d:
            raise ValueError("name_or_config as a dict must hold a 'model_type' key (e.g. 'git', 'blip-2')")
        return AutoConfig.for_model(d.pop("model_type"), **d)
    if not isinstance(name_or_config, (str, pathlib.Path)):
        raise ValueError(
            f"name_or_config must be a name, hub id, path, dict or transformers config, got {type(name_or_config).__name__}"
        )
    name = str(name_or_config)
    short = {hub: short for short, hub in SHIPPED_CONFIGS.items()}.get(name, name)
    if short in SHIPPED_CONFIGS:
        d = json.loads((CONFIG_DIR / f"{short}.json").read_text())
        return AutoConfig.for_model(d.pop("model_type"), **d)
    path = pathlib.Path(name)
    if path.is_file():
        d = json.loads(path.read_text())
        if "model_type" not in d:
            raise ValueError(f"the config file {path.name} has no 'model_type' key")
        return AutoConfig.for_model(d.pop("model_type"), **d)
    try:
        return AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as exc:  # offline, no such repo, or no config.json there
        raise _offline_error(name, exc) from None


def _model_class(config: Any) -> Any:
    import transformers

    for arch in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, arch, None)
        if cls is not None:
            return cls
    # No `architectures` (a config built in code): a captioner if it is one, else the base model.
    for auto in ("AutoModelForImageTextToText", "AutoModel"):
        mapping = getattr(getattr(transformers, auto, None), "_model_mapping", None)
        if mapping is not None and type(config) in mapping:
            return mapping[type(config)]
    raise ValueError(f"transformers has no model class for model_type={config.model_type!r}")


def build_meta_model(config: Any) -> Any:
    """Instantiate the model of ``config`` on the meta device, in eval mode, without grads."""
    import torch

    cls = _model_class(config)
    with torch.device("meta"):
        model = cls(config)
    return model.eval().requires_grad_(False)


@contextlib.contextmanager
def _meta_safe_masks() -> Iterator[None]:
    """Let transformers build attention masks from meta tensors (the one workaround here).

    ``transformers.masking_utils`` skips an all-ones padding mask by calling
    ``mask.all()``, which reads a value and fails on meta tensors ("Tensor.item() cannot be
    called on meta tensors"). It already avoids that read for traced/fake tensors via
    ``is_tracing``; during counting we make ``is_tracing`` also answer True for meta
    tensors, so the mask is built symbolically instead. Masks cost no FLOPs either way.
    """
    try:
        import transformers.masking_utils as mu
    except ImportError:  # older transformers: no masking_utils, nothing to patch
        yield
        return
    original = getattr(mu, "is_tracing", None)
    if original is None:
        yield
        return

    def is_tracing(tensor: Any = None) -> bool:
        return bool(original(tensor)) or bool(getattr(tensor, "is_meta", False))

    mu.is_tracing = is_tracing
    try:
        yield
    finally:
        mu.is_tracing = original


def _image_size(vc: Any) -> tuple[int, int]:
    size = getattr(vc, "image_size", 224)
    if isinstance(size, dict):
        size = (size.get("height", 224), size.get("width", 224))
    if isinstance(size, (list, tuple)):
        return int(size[0]), int(size[-1])
    return int(size), int(size)


def _default_frames(config: Any) -> int:
    n = getattr(config, "num_image_with_embedding", None) or getattr(config, "num_frames", None)
    return int(n) if n else 1


def _inputs(model: Any, config: Any, n_frames: int, prompt_len: int) -> tuple[dict[str, Any], int]:
    """Dummy meta inputs for one first-token forward pass, and the server's sequence length."""
    import torch

    params = inspect.signature(model.forward).parameters
    inputs: dict[str, Any] = {}
    server_positions = 0
    if "pixel_values" in params:
        vc = getattr(config, "vision_config", None) or config
        h, w = _image_size(vc)
        c = int(getattr(vc, "num_channels", 3))
        video = n_frames > 1 or getattr(config, "num_frames", None) is not None
        shape = (1, n_frames, c, h, w) if video else (1, c, h, w)
        inputs["pixel_values"] = torch.empty(shape, device="meta")
    if "input_ids" in params and (hasattr(config, "text_config") or "pixel_values" not in params
                                  or config.model_type == "git"):
        # BLIP-2-style models hold one placeholder token per query in the text (token ids do
        # not matter on meta: only shapes do).
        n_slots = int(getattr(config, "num_query_tokens", 0) or 0) if getattr(config, "image_token_index", None) is not None else 0
        inputs["input_ids"] = torch.zeros((1, n_slots + prompt_len), dtype=torch.long, device="meta")
        server_positions = n_slots + prompt_len
        if config.model_type == "git":
            vc = config.vision_config
            h, w = _image_size(vc)
            tokens = (h // vc.patch_size) * (w // vc.patch_size) + 1
            server_positions = prompt_len + (tokens * n_frames if "pixel_values" in inputs else 0)
    return inputs, server_positions


def _accepts_logits_to_keep(model: Any) -> bool:
    params = inspect.signature(model.forward).parameters
    if "logits_to_keep" in params:
        return True
    # BLIP-2 passes **kwargs on to its OPT language model, which takes logits_to_keep.
    lm = getattr(model, "language_model", None)
    has_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    return bool(lm is not None and has_kwargs and "logits_to_keep" in inspect.signature(lm.forward).parameters)


def _is_agent(dotted: str, agent_names: frozenset[str]) -> bool:
    return any(part in agent_names for part in dotted.split("."))


@functools.lru_cache(maxsize=32)
def _cached(key: str, n_frames: int | None, prompt_len: int, agent_names: frozenset[str] | None) -> ModelCosts:
    return _count(load_config(key), key, n_frames, prompt_len, agent_names)


def _count(config: Any, name: str, n_frames: int | None, prompt_len: int,
           agent_names: frozenset[str] | None) -> ModelCosts:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    names = AGENT_MODULE_NAMES if agent_names is None else agent_names
    model = build_meta_model(config)
    frames = _default_frames(config) if n_frames is None else n_frames
    if config.model_type == "git" and frames > _default_frames(config):
        raise ValueError(
            f"n_frames must be <= {_default_frames(config)} for {name!r}: GIT takes several frames only with "
            f"its temporal embeddings (num_image_with_embedding, 6 in 'git-base-vatex'), got {frames}"
        )
    inputs, server_positions = _inputs(model, config, frames, prompt_len)

    n_params = n_agent = 0
    agent_params: set[str] = set()
    for pname, p in model.named_parameters():  # shared (tied) parameters are yielded once
        n_params += p.numel()
        if _is_agent(pname, names):
            n_agent += p.numel()
            agent_params.add(pname)
    if n_agent == 0:
        raise ValueError(
            f"no module of {name!r} matches agent_modules={sorted(names)}; pass agent_modules naming the "
            f"modules the agent runs, e.g. some of {[n for n, _ in model.named_children()]}"
        )

    last_only = _accepts_logits_to_keep(model)
    kwargs = {"logits_to_keep": 1} if last_only else {}
    root = type(model).__name__
    with _meta_safe_masks(), FlopCounterMode(display=False, depth=None) as counter, torch.no_grad():
        model(**inputs, **kwargs)
    counts = {k: float(sum(v.values())) for k, v in counter.get_flop_counts().items()}
    total = counts.get("Global", 0.0)

    # Agent FLOPs: the outermost *called* modules inside the agent's part (a count includes
    # its children; containers such as ModuleList are never called and have no count).
    called = {k[len(root) + 1:]: v for k, v in counts.items() if k.startswith(root + ".")}
    agent_keys = {k for k in called if _is_agent(k, names)}
    flops_by_module: dict[str, float] = {}
    agent_flops = 0.0
    for dotted in sorted(agent_keys):
        parts = dotted.split(".")
        if not any(".".join(parts[:i]) in agent_keys for i in range(1, len(parts))):
            flops_by_module[dotted] = called[dotted]
            agent_flops += called[dotted]
    agent_modules = sorted({_outermost(p, names) for p in agent_params})
    server_modules = sorted({_top(pname, model, names) for pname, _ in model.named_parameters()
                             if pname not in agent_params})
    for mod in server_modules:
        if mod in called:
            flops_by_module[mod] = called[mod]
    return ModelCosts(
        name=name, n_params=int(n_params), n_params_agent=int(n_agent), n_params_server=int(n_params - n_agent),
        n_flop_agent=agent_flops, n_flop_server=total - agent_flops,
        agent_modules=tuple(agent_modules), server_modules=tuple(server_modules),
        n_frames=int(frames), prompt_len=int(prompt_len), server_positions=int(server_positions),
        head_last_position_only=last_only, flops_by_module=flops_by_module,
    )


def _outermost(dotted: str, names: frozenset[str]) -> str:
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if part in names:
            return ".".join(parts[: i + 1])
    return dotted


def _top(pname: str, model: Any, names: frozenset[str]) -> str:
    """The shallowest module holding ``pname`` that contains no agent module (server side)."""
    parts = pname.split(".")
    for i in range(1, len(parts)):
        prefix = ".".join(parts[:i])
        sub = model.get_submodule(prefix)
        if not any(_is_agent(n, names) for n, _ in sub.named_parameters(prefix=prefix)):
            return prefix
    return pname


def model_costs(name_or_config: Any, *, n_frames: int | None = None, prompt_len: int = 1,
                agent_modules: Sequence[str] | None = None) -> ModelCosts:
    """Parameters and first-token FLOPs of a model, split between agent and server.

    Parameters
    ----------
    name_or_config : str, path, dict or transformers.PretrainedConfig
        See :func:`load_config`; ``"blip2-opt-2.7b"``, ``"git-base"`` and
        ``"git-base-vatex"`` work offline.
    n_frames : int, optional
        Video frames fed to the vision encoder (>= 1). Default: the config's
        ``num_image_with_embedding`` or ``num_frames`` (6 for GIT-VaTeX), else 1.
    prompt_len : int
        Text tokens of the prompt fed with the embedding (>= 1; 1 = the BOS token).
    agent_modules : sequence of str, optional
        Module/parameter names (at any depth) that run on the agent; default
        :data:`AGENT_MODULE_NAMES` (the vision side).

    Returns
    -------
    ModelCosts
        ``n_flop_agent`` is :math:`N_{\\mathrm{FLOP}}` (eq. 4), ``n_flop_server`` is
        :math:`\\tilde N_{\\mathrm{FLOP}}` (eq. 5), at full precision.

    Raises
    ------
    ValueError
        For ``n_frames`` or ``prompt_len`` < 1, an unloadable config, or a model with
        no module named in ``agent_modules``.

    Notes
    -----
    FLOPs are those of matrix products, convolutions and attention (2 per multiply-add);
    element-wise ops (norms, activations, softmax) are not counted, a < 0.1 % effect for
    these models. Results of named configs are cached per argument set.

    Examples
    --------
    >>> c = model_costs("git-base-vatex")
    >>> c.n_params, c.n_frames, round(c.n_flop_agent / 1e9, 2)
    (176623674, 6, 212.15)
    """
    if n_frames is not None and (isinstance(n_frames, bool) or not isinstance(n_frames, int) or n_frames < 1):
        raise ValueError(f"n_frames must be an integer >= 1 (video frames), got {n_frames!r}")
    if isinstance(prompt_len, bool) or not isinstance(prompt_len, int) or prompt_len < 1:
        raise ValueError(f"prompt_len must be an integer >= 1 (prompt tokens incl. BOS), got {prompt_len!r}")
    names = None if agent_modules is None else frozenset(agent_modules)
    if names is not None and (not names or not all(isinstance(n, str) and n for n in names)):
        raise ValueError(f"agent_modules must be a non-empty sequence of module names, got {agent_modules!r}")
    if isinstance(name_or_config, (str, pathlib.Path)):
        return _cached(str(name_or_config), n_frames, prompt_len, names)
    config = load_config(name_or_config)
    return _count(config, getattr(config, "name_or_path", "") or config.model_type, n_frames, prompt_len, names)
