"""The sweep over models nobody here wrote (issues 8 and 17, tests/foreign.py): HuggingFace
`transformers` vision, text, audio and decoder-only models from small configs, one small model
per timm module and one more architecture per module, torchvision's segmentation, video and
detection models, segmentation_models_pytorch, diffusers and ultralytics (each skipped where
its package is not installed). Every model is verified (random widths at about half the FLOPs
slim and pass widthc.verify), refused with a clear WidthcError (foreign.REFUSED), or a known
limitation (foreign.LIMITS). An unexpected exception fails; so does a listed model whose state
changed (update the table). `make test` runs a fixed slice; `make test-all` all of them.
"""

from __future__ import annotations

import os

import foreign
import pytest
import torch

import widthc
from widthc.verify import verify

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

SPECS = foreign.specs()
DEFAULT = [
    "hf:mobilenet_v1", "hf:swin", "hf:distilbert", "timm:test_vit",
    "torchvision:lraspp_mobilenet_v3_large",
    # issue 17: a tuple-sum head reshape, split sizes read from a shape, a weight-normed conv,
    # a fused qkv sliced by indexing in a graph traced again to hold at every batch, a refusal
    "hf:pvt_v2", "hf:focalnet", "hf:wav2vec2", "hf:phi3",
    "torchvision:ssdlite320_mobilenet_v3_large",
]  # fmt: skip


def _slow_unless_default(specs: list[str]) -> list:
    return [s if s in DEFAULT else pytest.param(s, marks=pytest.mark.slow) for s in specs]


@pytest.mark.parametrize("spec", _slow_unless_default(SPECS))
def test_foreign_model_is_verified_refused_or_a_known_limitation(spec):
    pytest.importorskip(foreign.PACKAGES[spec.split(":", 1)[0]])
    if spec in foreign.LIMITS:
        fragment, _ = foreign.LIMITS[spec]
        try:
            outcome = foreign.run(spec)
        except Exception as e:  # noqa: BLE001 - the limitation as written in the table
            assert fragment in str(e), f"{spec} fails otherwise than foreign.LIMITS says: {e}"
            return
        assert outcome.state == "limited" and fragment in outcome.detail, (
            f"{spec} now ends {outcome.state} ({outcome.detail}): update foreign.LIMITS"
        )
        return
    outcome = foreign.run(spec)
    if spec in foreign.REFUSED:
        assert outcome.state == "refused", f"{spec} is now {outcome.state}: update REFUSED"
        assert foreign.REFUSED[spec] in outcome.detail and "\n" not in outcome.detail
        return
    assert outcome.state == "verified", f"{spec}: {outcome.state}: {outcome.detail}"
    assert outcome.searchable_fraction > 0


def test_the_tables_name_models_of_the_sweep():
    assert set(foreign.LIMITS) | set(foreign.REFUSED) <= set(SPECS)
    assert not set(foreign.LIMITS) & set(foreign.REFUSED)
    assert all(fragment and reason for fragment, reason in foreign.LIMITS.values())
    assert len(foreign.TIMM_SAMPLE) >= 60 and len(set(foreign.TIMM_SAMPLE)) == len(
        foreign.TIMM_SAMPLE
    )
    assert not set(foreign.TIMM_VARIANTS) & set(foreign.TIMM_SAMPLE) and len(SPECS) == len(
        set(SPECS)
    )
    assert set(DEFAULT) <= set(SPECS) and not set(DEFAULT) & set(foreign.LIMITS)


def test_yolov8_slims_with_backbone_and_neck_searchable(tmp_path):
    """ultralytics' YOLOv8n built from its yaml (nothing downloaded): the root takes
    `*args, **kwargs`, every C2f block iterates `x.chunk(2, 1)`, and the Detect head caches
    its anchors on a shape comparison (it becomes a leaf)."""
    os.environ.setdefault("YOLO_CONFIG_DIR", str(tmp_path))
    tasks = pytest.importorskip("ultralytics.nn.tasks")
    torch.manual_seed(0)
    model = tasks.DetectionModel("yolov8n.yaml", nc=5, verbose=False).eval()
    x = torch.randn(1, 3, 64, 64)
    program = widthc.compile(model, x)
    assert [path for path, _ in program.traced.auto_leaves] == ["model.22"]
    assert type(model.model[22]).__name__ == "Detect"
    with torch.no_grad():
        foreign.assert_same(program.gm(x), model(x))
    choice = program.uniform(flops=0.5 * program.flops())
    small = widthc.slim(program, choice)
    checks = verify(program, choice, small)
    assert checks.flops_error == 0 and checks.onnx is not None and checks.onnx <= 1e-4
    layer = {p: int(p.split(".")[1]) for g in program.searchable for p in g.producers}
    assert any(i <= 9 for i in layer.values())  # backbone: layers 0-9
    assert any(10 <= i <= 21 for i in layer.values())  # neck: layers 10-21
    assert program.to_json()["searchable_channel_fraction"] > 0.5
