r"""FCDNN-16, the fully connected ReLU autoencoder of the paper's Fig. 3 (Sec. VI-A), and its seeded training.

The paper: "an autoencoder with ReLU activation functions. The encoder consists of 8 layers
with dimensions [64, 128, 256, 512, 256, 128, 64, 32], and the decoder is symmetric", trained
with the MSE loss on MNIST. We read the eight numbers as the output widths of the eight encoder
layers; the decoder mirrors them back to the input, so there are 16 ``Linear`` layers (hence
the name) and the network has exactly the form of eq. (10): no biases, ReLU between layers,
none after the last, so Prop. 3.1 applies to it as stated.

Offline, the default data set is scikit-learn's 8×8 digits (1,797 images, 64 features, shipped
with scikit-learn); :func:`load_mnist` reads MNIST from a local ``mnist.npz`` for readers who
have it. :func:`train_fcdnn` is seeded and deterministic: two runs with the same seed and thread
count in one environment give bit-identical weights. Another CPU may not: MKL/oneDNN pick their
kernels from the CPU's instruction set (AVX2, AVX-512, AMX), so the last bits of each product
differ and 30 epochs of Adam amplify them; there, retraining reproduces the shipped model
(``qlib/data/fcdnn16_digits.safetensors``) in its test MSE, within a few percent, not in its weights.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = [
    "ENCODER_WIDTHS",
    "DEFAULT_WEIGHTS",
    "fcdnn16",
    "layer_dims",
    "load_digits_data",
    "load_mnist",
    "l1_normalize",
    "TrainResult",
    "train_fcdnn",
    "reconstruction_mse",
    "save_fcdnn",
    "load_fcdnn",
    "DIGITS_RECIPE",
    "train_digits",
]

ENCODER_WIDTHS = (64, 128, 256, 512, 256, 128, 64, 32)
DEFAULT_WEIGHTS = pathlib.Path(__file__).resolve().parent / "data" / "fcdnn16_digits.safetensors"
#: How ``qlib/data/fcdnn16_digits.safetensors`` was made: ``train_digits(DEFAULT_WEIGHTS)``.
DIGITS_RECIPE = {"epochs": 30, "lr": 1e-3, "batch_size": 64, "seed": 0, "test_size": 297, "split_seed": 0}


def layer_dims(in_features: int = 64) -> list[int]:
    """Widths from input to output: in, 64, 128, …, 32, …, 128, 64, in (17 numbers, 16 layers)."""
    if not isinstance(in_features, (int, np.integer)) or in_features < 1:
        raise ValueError(f"in_features must be an integer >= 1, got {in_features!r}")
    enc = list(ENCODER_WIDTHS)
    return [int(in_features)] + enc + enc[-2::-1] + [int(in_features)]


def fcdnn16(in_features: int = 64, seed: int | None = None) -> torch.nn.Sequential:
    """An untrained FCDNN-16: 16 bias-free ``Linear`` layers with ReLU between them (eq. 10), He-initialized.

    Parameters
    ----------
    in_features : int
        Input (and output) size: 64 for the 8×8 digits, 784 for MNIST.
    seed : int, optional
        Seeds the default (Kaiming-uniform) initialization locally, without touching the
        global RNG; None uses the global RNG.
    """
    dims = layer_dims(in_features)
    layers: list[torch.nn.Module] = []
    ctx = torch.random.fork_rng(devices=[]) if seed is not None else _nullcontext()
    with ctx:
        if seed is not None:
            torch.manual_seed(int(seed))
        for i, (a, b) in enumerate(zip(dims, dims[1:])):
            lin = torch.nn.Linear(a, b, bias=False)
            # He initialization keeps the signal's scale through 16 bias-free ReLU layers;
            # torch's default (variance 1/(3 fan_in)) shrinks it ~6x per layer and training stalls.
            hidden = i < len(dims) - 2
            torch.nn.init.kaiming_normal_(lin.weight, nonlinearity="relu" if hidden else "linear")
            layers.append(lin)
            if hidden:
                layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


def l1_normalize(X: torch.Tensor) -> torch.Tensor:
    r"""Scale each row to :math:`\|\mathbf x\|_1 = 1` (Assumption 1); all-zero rows stay 0."""
    n = X.abs().sum(dim=-1, keepdim=True)
    return X / torch.where(n > 0, n, torch.ones_like(n))


def load_digits_data(test_size: int = 297, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8×8 digits as float32 in [0, 1], split into (train, test) by a seeded permutation.

    Parameters
    ----------
    test_size : int
        Number of held-out images, 1 … 1796.
    seed : int
        Seed of the split.
    """
    from sklearn.datasets import load_digits

    X = load_digits().data.astype(np.float32) / 16.0
    if not 1 <= test_size < len(X):
        raise ValueError(f"test_size must be in 1…{len(X) - 1}, got {test_size}")
    perm = np.random.default_rng(seed).permutation(len(X))
    X = torch.from_numpy(X[perm])
    return X[test_size:].contiguous(), X[:test_size].contiguous()


def load_mnist(path: str | pathlib.Path) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST from a local ``mnist.npz`` (keys ``x_train``, ``x_test``, as Keras ships it), as float32 in [0, 1], 784 features.

    Raises
    ------
    ValueError
        If the file does not exist or lacks those keys (there is no download: the book runs offline).
    """
    p = pathlib.Path(path)
    if not p.is_file():
        raise ValueError(f"mnist_path must point to an existing mnist.npz file (x_train, x_test), got {p.name!r}")
    with np.load(p) as z:
        if "x_train" not in z or "x_test" not in z:
            raise ValueError("mnist_path must be an .npz with arrays x_train and x_test")
        tr, te = z["x_train"], z["x_test"]
    f = lambda a: torch.from_numpy(a.reshape(len(a), -1).astype(np.float32) / 255.0)  # noqa: E731
    return f(tr), f(te)


@dataclass(frozen=True)
class TrainResult:
    """A trained model and its per-epoch mean training MSE."""

    model: torch.nn.Sequential
    losses: list[float]


def train_fcdnn(X: torch.Tensor, epochs: int = 30, lr: float = 1e-3, batch_size: int = 64,
                seed: int = 0) -> TrainResult:
    """Train FCDNN-16 as an autoencoder with the MSE loss and Adam, deterministically.

    Parameters
    ----------
    X : torch.Tensor
        Training inputs, shape (n, features), float32.
    epochs : int
        Passes over the data, >= 1.
    lr : float
        Adam learning rate, > 0.
    batch_size : int
        >= 1.
    seed : int
        Seeds the initialization and the shuffling (local generators; the global RNG is not used).

    Returns
    -------
    TrainResult
    """
    if not isinstance(X, torch.Tensor) or X.ndim != 2 or X.shape[0] < 1:
        raise ValueError("X must be a 2-D torch.Tensor (n, features) with n >= 1")
    if not isinstance(epochs, (int, np.integer)) or epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    X = X.float()
    model = fcdnn16(X.shape[1], seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(int(seed))
    losses = []
    model.train()
    for _ in range(int(epochs)):
        perm = torch.randperm(X.shape[0], generator=gen)
        total = 0.0
        for i in range(0, X.shape[0], int(batch_size)):
            xb = X[perm[i:i + int(batch_size)]]
            loss = torch.nn.functional.mse_loss(model(xb), xb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * xb.shape[0]
        losses.append(total / X.shape[0])
    model.eval()
    return TrainResult(model, losses)


@torch.no_grad()
def reconstruction_mse(model: torch.nn.Module, X: torch.Tensor) -> float:
    """Mean squared reconstruction error of an autoencoder on ``X``."""
    model.eval()
    return float(torch.nn.functional.mse_loss(model(X), X))


def save_fcdnn(model: torch.nn.Sequential, path: str | pathlib.Path = DEFAULT_WEIGHTS,
               metadata: dict[str, Any] | None = None) -> pathlib.Path:
    """Save the weights with safetensors (plus ``in_features`` and string metadata)."""
    from safetensors.torch import save_file

    lins = [m for m in model if isinstance(m, torch.nn.Linear)]
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    meta["in_features"] = str(lins[0].in_features)
    p = pathlib.Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(p), metadata=meta)
    return p


def load_fcdnn(path: str | pathlib.Path = DEFAULT_WEIGHTS) -> tuple[torch.nn.Sequential, dict[str, str]]:
    """Load FCDNN-16 weights saved by :func:`save_fcdnn`; returns (model in eval mode, metadata)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    p = pathlib.Path(path)
    if not p.is_file():
        raise ValueError(f"path must be an existing .safetensors file from save_fcdnn, got {p.name!r}")
    with safe_open(str(p), framework="pt") as f:
        meta = dict(f.metadata() or {})
    model = fcdnn16(int(meta.get("in_features", 64)))
    model.load_state_dict(load_file(str(p)))
    model.eval()
    return model, meta


def train_digits(path: str | pathlib.Path | None = None, threads: int = 1, **recipe: Any) -> TrainResult:
    """Train FCDNN-16 on the 8×8 digits with :data:`DIGITS_RECIPE` (overridable), optionally saving it.

    Two calls with the same recipe and ``threads`` in one environment give bit-identical weights.
    Against the shipped ``fcdnn16_digits.safetensors`` only the test MSE is comparable: the CPU
    chooses the float kernels (hence the last bits, which training amplifies), so on another
    machine the weights differ while the test MSE stays within a few percent of the metadata's.
    """
    unknown = set(recipe) - set(DIGITS_RECIPE)
    if unknown:
        raise ValueError(f"recipe keys must be among {sorted(DIGITS_RECIPE)}, got {sorted(unknown)}")
    r = {**DIGITS_RECIPE, **recipe}
    torch.set_num_threads(int(threads))
    Xtr, Xte = load_digits_data(test_size=r["test_size"], seed=r["split_seed"])
    res = train_fcdnn(Xtr, epochs=r["epochs"], lr=r["lr"], batch_size=r["batch_size"], seed=r["seed"])
    if path is not None:
        import platform

        meta = {**r, "dataset": "sklearn-digits-8x8", "torch": torch.__version__, "threads": threads,
                "machine": platform.machine(), "train_mse": f"{res.losses[-1]:.6g}",
                "test_mse": f"{reconstruction_mse(res.model, Xte):.6g}"}
        save_fcdnn(res.model, path, meta)
    return res
