"""circuit-tracer subclasses that read Gemma Scope files directly (imported only when circuit-tracer is).

* :class:`GemmaScopeTranscoder` (a ``SingleLayerTranscoder``): one layer's ``params.safetensors`` (GS2)
  or ``params.npz`` (GS1). Lazy: the encoder (and skip) is read on first use and then held; decoder rows
  are read per call through ``_get_decoder_vectors`` (safetensors slices), never held.
* :class:`GemmaScopeCLT` (a ``CrossLayerTranscoder``): the per-layer ``params_layer_{i}.safetensors``
  of a GS2 CLT, all L layers. ``b_enc``/``threshold``/``b_dec`` (a few KB per layer) are read when the
  object is built; encoders and affine skips per layer on first use; decoder rows per feature
  (``w_dec_i[feat_ids, i:, :]``) per call.

Conventions (checked against a float64 reference in ``tests/integrations``): circuit-tracer's
``W_enc`` is ``w_enc.T`` (d_transcoder, d_model); single-layer ``W_skip`` is
``affine_skip_connection.T`` (circuit-tracer computes ``x @ W_skip.T``); CLT skips stay input-major
(``x @ affine_skip_connection``). The JumpReLU is Gemma Scope's ``relu(x) * (x > threshold)``
(circuit-tracer's ``x * (x > threshold)`` differs only for negative thresholds).

This module imports circuit-tracer at import time; use it through
:mod:`sae_lens_gemmascope.integrations.circuit_tracer`, which checks the install first.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from circuit_tracer.transcoder.activation_functions import JumpReLU
from circuit_tracer.transcoder.cross_layer_transcoder import CrossLayerTranscoder
from circuit_tracer.transcoder.single_layer_transcoder import SingleLayerTranscoder
from torch import nn

from ._files import TensorFile

__all__ = ["ExactJumpReLU", "GemmaScopeCLT", "GemmaScopeTranscoder"]

_SKIP = "affine_skip_connection"


class ExactJumpReLU(JumpReLU):  # type: ignore[misc,unused-ignore]
    """circuit-tracer's ``JumpReLU`` (same straight-through gradients) computing ``relu(x) * (x > θ)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # relu(x) * (relu(x) > θ) == relu(x) * (x > θ) for every θ
        out: torch.Tensor = super().forward(torch.relu(x))
        return out


def _param(t: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(t.contiguous(), requires_grad=False)


class GemmaScopeTranscoder(SingleLayerTranscoder):  # type: ignore[misc,unused-ignore]
    """A circuit-tracer ``SingleLayerTranscoder`` backed by one Gemma Scope weight file.

    ``names`` maps the roles ``enc``/``dec``/``b_enc``/``b_dec``/``threshold``/``skip`` to the file's
    tensor names (``w_enc``... for GS2, ``W_enc``... for GS1). With ``lazy=False`` everything is read now.
    """

    def __init__(
        self,
        file: TensorFile,
        layer: int,
        names: dict[str, str],
        *,
        lazy: bool = True,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> None:
        d_model, d_sae = file.shape(names["enc"])
        affine = "skip" in names
        threshold = file.read(names["threshold"]).float().to(device)
        with torch.device("meta"):
            super().__init__(
                d_model,
                d_sae,
                ExactJumpReLU(torch.zeros(d_sae), 0.1),
                layer,
                skip_connection=False,
                transcoder_path=str(file.path),
                lazy_encoder=True,
                lazy_decoder=True,
                device=torch.device("meta"),
                dtype=dtype,
            )
        self.activation_function.threshold = _param(threshold)  # float32, as our loaders keep it
        self.b_enc = _param(file.read(names["b_enc"]).to(device, dtype))
        self.b_dec = _param(file.read(names["b_dec"]).to(device, dtype))
        self._file = file
        self._names = dict(names)
        self._affine = affine
        if affine:
            del self.__dict__["W_skip"]  # read on first use through __getattr__
        if not lazy:
            self._load("W_enc")
            self._load("W_dec")
            if affine:
                self._load("W_skip")

    def _read(self, role: str) -> torch.Tensor:
        t = self._file.read(self._names[role])
        if role in ("enc", "skip"):
            t = t.T  # stored input-major (d_in, d_sae) / (d_in, d_out)
        return t.to(device=self.device, dtype=self.dtype)

    def _load(self, name: str) -> torch.Tensor:
        role = {"W_enc": "enc", "W_dec": "dec", "W_skip": "skip"}[name]
        p = _param(self._read(role))
        self._parameters[name] = p  # (register_parameter's hasattr would recurse into __getattr__)
        if name == "W_enc":
            self.lazy_encoder = False
        elif name == "W_dec":
            self.lazy_decoder = False
        return p

    def __getattr__(self, name: str) -> Any:
        params = self.__dict__.get("_parameters", {})
        if name in ("W_enc", "W_skip") and name not in params and "_file" in self.__dict__:
            if name == "W_skip" and not self.__dict__["_affine"]:
                return None
            return self._load(name)  # held from now on: memory grows with the layers touched
        if name == "W_dec" and name not in params and "_file" in self.__dict__:
            return self._read("dec")  # whole decoder, not held (circuit-tracer's lazy_decoder)
        return nn.Module.__getattr__(self, name)

    def _get_decoder_vectors(self, feat_ids: Any = None) -> torch.Tensor:
        if "W_dec" in self._parameters:
            w = self._parameters["W_dec"]
            assert w is not None
            rows: torch.Tensor = w if feat_ids is None else w[torch.as_tensor(feat_ids, device=w.device)]
            return rows
        if feat_ids is None:
            return self._read("dec")
        rows = self._file.read_rows(self._names["dec"], feat_ids)
        return rows.to(device=self.device, dtype=self.dtype)

    def compute_skip(self, input_acts: torch.Tensor) -> torch.Tensor:
        w = self.W_skip
        if w is None:
            raise ValueError(f"Layer {self.layer_idx}'s transcoder has no affine skip connection.")
        out: torch.Tensor = input_acts.to(w.dtype) @ w.T
        return out


class GemmaScopeCLT(CrossLayerTranscoder):  # type: ignore[misc,unused-ignore]
    """A circuit-tracer ``CrossLayerTranscoder`` over the per-layer files of a Gemma Scope 2 CLT.

    ``open_file(i)`` returns the path of ``params_layer_{i}.safetensors`` (fetched and shape-checked by
    the caller). Features of layer ``i`` write to layers ``i..L-1`` (``w_dec_i[:, i:, :]``).
    """

    def __init__(
        self,
        open_file: Callable[[int], Path],
        *,
        n_layers: int,
        d_transcoder: int,
        d_model: int,
        affine: bool,
        feature_input_hook: str,
        feature_output_hook: str,
        scan: str | None = None,
        lazy: bool = True,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        progress: Callable[[range], Any] = iter,
    ) -> None:
        with torch.device("meta"):
            super().__init__(
                n_layers,
                d_transcoder,
                d_model,
                activation_function="jump_relu",
                skip_connection=False,
                lazy_decoder=True,
                lazy_encoder=True,
                feature_input_hook=feature_input_hook,
                feature_output_hook=feature_output_hook,
                scan=scan,
                device=torch.device("meta"),
                dtype=dtype,
            )
        self._files: list[TensorFile] = []
        b_enc = torch.empty(n_layers, d_transcoder, dtype=dtype, device=device)
        b_dec = torch.empty(n_layers, d_model, dtype=dtype, device=device)
        thr = torch.empty(n_layers, 1, d_transcoder, dtype=torch.float32, device=device)
        for i in progress(range(n_layers)):
            f = TensorFile(open_file(i))
            self._files.append(f)
            b_enc[i] = f.read("b_enc")
            b_dec[i] = f.read("b_dec")
            thr[i, 0] = f.read("threshold")
        self.clt_path = str(self._files[0].path.parent)
        self.b_enc = _param(b_enc)
        self.b_dec = _param(b_dec)
        self.activation_function = ExactJumpReLU(thr, 0.1)
        self.activation_function.threshold.requires_grad_(False)
        self.skip_connection = bool(affine)
        del self.__dict__["W_skip"]  # W_skip (stacked) is built on demand; per-layer skips are cached
        self.enc_cache = nn.ParameterDict()  # str(layer) -> W_enc (d_transcoder, d_model)
        self.skip_cache = nn.ParameterDict()  # str(layer) -> affine_skip_connection (d_model, d_model)
        self.dec_cache = nn.ParameterDict()  # str(layer) -> w_dec[:, layer:, :], only with lazy=False
        if not lazy:
            for i in progress(range(n_layers)):
                self._get_encoder_weights(i)
                if affine:
                    self._skip(i)
                self.dec_cache[str(i)] = _param(self._read_dec(i, None))

    # ----- reads ----------------------------------------------------------------------------------

    def _read_dec(self, layer_id: int, feat_ids: Any) -> torch.Tensor:
        f = self._files[layer_id]
        if feat_ids is None:
            ids: Any = torch.arange(f.shape("w_dec")[0])
        else:
            ids = feat_ids
        return f.read_rows("w_dec", ids, first_target=layer_id).to(device=self.device, dtype=self.dtype)

    def _get_encoder_weights(self, layer_id: int | None = None) -> torch.Tensor:
        if layer_id is None:
            return torch.stack([self._get_encoder_weights(i) for i in range(self.n_layers)])
        key = str(int(layer_id))
        if key not in self.enc_cache:
            w = self._files[int(layer_id)].read("w_enc").T.to(device=self.device, dtype=self.dtype)
            self.enc_cache[key] = _param(w)
        out: torch.Tensor = self.enc_cache[key]
        return out

    def _get_decoder_vectors(self, layer_id: int, feat_ids: Any = None) -> torch.Tensor:
        key = str(int(layer_id))
        if key in self.dec_cache:
            w: torch.Tensor = self.dec_cache[key]
            return w if feat_ids is None else w[torch.as_tensor(feat_ids, device=w.device)]
        return self._read_dec(int(layer_id), feat_ids)

    def _skip(self, layer_id: int) -> torch.Tensor:
        key = str(int(layer_id))
        if key not in self.skip_cache:
            w = self._files[int(layer_id)].read(_SKIP).to(device=self.device, dtype=self.dtype)
            self.skip_cache[key] = _param(w)
        out: torch.Tensor = self.skip_cache[key]
        return out

    def __getattr__(self, name: str) -> Any:
        if name == "W_skip" and "_files" in self.__dict__:
            if not self.__dict__["skip_connection"]:
                return None
            return torch.stack([self._skip(i) for i in range(self.n_layers)])
        return nn.Module.__getattr__(self, name)

    # ----- maths that circuit-tracer gets wrong for Gemma Scope 2 affine CLTs ------------------------

    def apply_activation_function(self, layer_id: int, features: torch.Tensor) -> torch.Tensor:
        mask = features > self.activation_function.threshold[layer_id]
        out: torch.Tensor = torch.relu(features) * mask.to(features.dtype)
        return out

    def compute_skip(self, layer_id: int, inputs: torch.Tensor) -> torch.Tensor:
        if not self.skip_connection:
            raise ValueError("This CLT has no affine skip connection.")
        w = self._skip(layer_id)
        out: torch.Tensor = inputs.to(w.dtype) @ w
        return out

    def compute_reconstruction(
        self,
        pos_ids: torch.Tensor,
        layer_ids: torch.Tensor,
        decoder_vectors: torch.Tensor,
        input_acts: torch.Tensor | None = None,
    ) -> torch.Tensor:
        # circuit-tracer takes n_pos from the last *active* position; the inputs know the real length
        n_pos = int(input_acts.shape[1]) if input_acts is not None else int(pos_ids.max()) + 1
        flat = layer_ids * n_pos + pos_ids
        recon = torch.zeros(
            n_pos * self.n_layers, self.d_model, device=decoder_vectors.device, dtype=decoder_vectors.dtype
        ).index_add_(0, flat, decoder_vectors)
        recon = recon.reshape(self.n_layers, n_pos, self.d_model) + self.b_dec[:, None].to(recon.dtype)
        if self.skip_connection:
            if input_acts is None:
                raise ValueError(
                    "This CLT is affine: pass the MLP inputs (n_layers, n_pos, d_model) as input_acts for the skip."
                )
            skips = [self.compute_skip(i, input_acts[i]) for i in range(self.n_layers)]
            recon = recon + torch.stack(skips).to(recon.dtype)
        return recon

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encode(x.to(self.dtype))  # type: ignore[no-untyped-call,unused-ignore]
        decoded: torch.Tensor = self.decode(feats.to_sparse(), input_acts=x)
        return decoded
