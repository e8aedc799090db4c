#!/usr/bin/env python3
"""Run DSTE's kernels on a Neuron device: parity against SciPy/NumPy and measured against modelled latency.

For each case (generated graphs with shuffled node ids, every X mode the kernel takes, at trn2's logical-core
setting, LNC2; the SpMM kernel's indirect gathers need NeuronCore-v3 or newer, so trn1 is not offered), this script

1. runs ``spmm_hybrid`` through the real ``nki.jit`` on the device (``backend="neuron"``) and checks Y
   against ``dste.reference.spmm_reference`` (float64 SciPy) within the kernel's documented error
   bound (``tests/kernels/error_bounds.py``: bf16 operand rounding);
2. runs ``masked_quant`` and ``quantize_rows`` on the device and checks them bit for bit against
   ``dste.reference.masked_quant``;
3. runs the same launches in ``dste.nkisim`` for the *modelled* latency (both DMA models);
4. writes ``{case: {measured_us, modelled_us, modelled_optimistic_us, max_error / bound, ...}}`` to JSON.

It needs a Trn2 host with the Neuron SDK (``nki``, ``neuronx-cc``, ``torch-neuronx``) and exits
with status 2 and a clear message anywhere else. **It has never run**: the development machines have no
Neuron device or SDK, so every figure the project reports is modelled. Usage::

    python scripts/validate_on_neuron.py --target trn2 --out neuron_validation.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _cases(seed):
    import scipy.sparse as sp

    import dste

    rng = np.random.default_rng(seed)
    for n, density, features in ((1000, 0.01, 64), (5000, 0.002, 128), (20000, 0.0005, 256)):
        adj = sp.random(n, n, density=density, format="csr", random_state=rng)
        adj = ((adj + adj.T) > 0).astype(np.float32)
        order = rng.permutation(n)
        adj = adj[order][:, order].tocsr()
        matrix = dste.gcn_normalized(adj, reorder="community")
        x = rng.standard_normal((n, features)).astype(np.float32)
        yield f"gcn-n{n}-F{features}", matrix, x


def _spmm_checks(target, lncs, seed):
    import ml_dtypes

    import dste
    from dste.kernels.launch_spmm import launch_spmm_hybrid
    from dste.reference import spmm_reference

    sys.path.insert(0, str(REPO))
    from tests.kernels.error_bounds import error_bound

    results = {}
    for name, matrix, x in _cases(seed):
        operands = {"fp32": x, "bf16": x.astype(ml_dtypes.bfloat16), "fp16": x.astype(np.float16),
                    "int8-hybrid": dste.quantize_rows(x)}
        for mode, operand in operands.items():
            reference = spmm_reference(matrix, operand)
            bound = error_bound(matrix, operand)
            for lnc in lncs:
                y, timing = launch_spmm_hybrid(matrix, operand, target=target, profile=True, lnc=lnc, backend="neuron")
                _, modelled = launch_spmm_hybrid(matrix, operand, target=target, profile=True, lnc=lnc, backend="nkisim")
                ratio = float(np.max(np.abs(np.asarray(y, np.float64) - reference) / bound))
                results[f"spmm/{name}/{mode}/lnc{lnc}"] = {
                    "passed": ratio <= 1.0,
                    "max_error_over_bound": ratio,
                    "measured_us": timing.wall_us,
                    "launches": timing.launches,
                    "modelled": modelled.to_dict(),
                }
    return results


def _encoder_checks(target, seed):
    from dste.kernels.launch_quant import launch_masked_quant, launch_quantize_rows
    from dste.reference.masked_quant import masked_quant_reference, quantize_rows_reference

    rng = np.random.default_rng(seed)
    values = rng.standard_normal((64, 128, 128)).astype(np.float32)
    keep = rng.random(values.shape) < 0.3
    sensitivity = rng.random(64).astype(np.float32) * 0.04
    device = launch_masked_quant(values, keep, sensitivity, 0.02, target=target, backend="neuron")
    want = masked_quant_reference(values, keep, sensitivity, 0.02)
    results = {"masked_quant": {"passed": all(np.array_equal(np.asarray(a).reshape(b.shape), b)
                                              for a, b in zip(device, want))}}
    x = rng.standard_normal((4096, 128)).astype(np.float32)
    sens = rng.random(4096).astype(np.float32) * 0.04
    rows = launch_quantize_rows(x, sens, 0.02, target=target, backend="neuron")
    ref = quantize_rows_reference(x, sens, 0.02)
    results["quantize_rows"] = {"passed": bool(np.array_equal(rows.q, ref.q) and np.array_equal(rows.scale, ref.scale)
                                               and np.array_equal(rows.hi.view(np.uint16), ref.hi.view(np.uint16)))}
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", choices=("trn2",), default="trn2",
                        help="the NeuronCore generation of the host (trn2: the kernel's gathers need NeuronCore-v3+)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("neuron_validation.json"))
    args = parser.parse_args(argv)
    from dste.nkisim import real_nki_available

    if not real_nki_available():
        print("validate_on_neuron: no Neuron SDK here (`import nki` is the PyPI placeholder or missing); "
              "run this on a Trn host with nki, neuronx-cc and torch-neuronx installed", file=sys.stderr)
        return 2
    # the runtime's logical-core setting decides what a launch may use: LNC2 is trn2's default
    # (NEURON_LOGICAL_NC_CONFIG=1 switches a trn2 host to LNC1)
    lncs = (2,)
    results = {"target": args.target, "note": "measured_us is measured on the device; modelled figures come "
               "from dste.nkisim's cost model"}
    results.update(_spmm_checks(args.target, lncs, args.seed))
    results.update(_encoder_checks(args.target, args.seed))
    args.out.write_text(json.dumps(results, indent=2))
    failed = [name for name, value in results.items() if isinstance(value, dict) and not value.get("passed", True)]
    print(f"{len(results) - 2} checks, {len(failed)} failed; written to {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
