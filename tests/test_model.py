"""Weights: the DeepLabV3Plus-Pytorch conversion and its geometry, safe loading, offline errors."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models import resnet50, resnet101
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation.deeplabv3 import ASPP
from torchvision.models.segmentation import deeplabv3_resnet101

import tilepipe
from tilepipe.errors import TilepipeError
from tilepipe.model import ModelSpec, load_model


class VainFDeepLabV3(nn.Module):
    """DeepLabV3 as DeepLabV3Plus-Pytorch builds it (network/_deeplab.py): the head's layers sit
    under ``classifier.classifier``; at output stride 16 layer3 is not dilated and ASPP uses 6/12/18."""

    def __init__(self, num_classes=21, output_stride=16, depth=resnet101):
        super().__init__()
        dilate, rates = ([False, False, True], [6, 12, 18]) if output_stride == 16 else ([False, True, True], [12, 24, 36])
        self.backbone = IntermediateLayerGetter(depth(replace_stride_with_dilation=dilate), {"layer4": "out"})
        self.classifier = nn.Module()
        self.classifier.classifier = nn.Sequential(
            ASPP(2048, rates), nn.Conv2d(256, 256, 3, padding=1, bias=False), nn.BatchNorm2d(256), nn.ReLU(),
            nn.Conv2d(256, num_classes, 1))

    def forward(self, x):
        features = self.backbone(x)["out"]
        out = self.classifier.classifier(features)
        return nn.functional.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)


def calibrate_batchnorm(model: nn.Module, batches: list[torch.Tensor]) -> nn.Module:
    """Give random weights realistic BatchNorm statistics, so activations neither vanish nor explode."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        for x in batches:
            model(x)
    return model.eval()


@pytest.fixture(scope="module")
def vainf_checkpoint(tmp_path_factory):
    torch.manual_seed(1)
    source = VainFDeepLabV3(num_classes=5, output_stride=16)
    x = torch.rand(2, 3, 96, 96)
    calibrate_batchnorm(source, [x, torch.rand(2, 3, 96, 96)])
    path = tmp_path_factory.mktemp("ckpt") / "best_deeplabv3_resnet101_voc_os16.pth"
    torch.save({"cur_itrs": 30000, "model_state": source.state_dict(), "best_score": np.float64(0.773)}, path)
    with torch.no_grad():
        expected = source(x)
    return path, x, expected


@pytest.mark.real_model
def test_deeplabv3plus_checkpoint_reproduces_source_outputs_in_its_geometry(vainf_checkpoint):
    path, x, expected = vainf_checkpoint
    loaded = load_model(ModelSpec(weights=str(path)))
    assert loaded.output_stride == 16 and loaded.weights_format == "DeepLabV3Plus-Pytorch"
    assert loaded.num_classes == 5
    with torch.no_grad():
        got = loaded.module(x)["out"]
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.real_model
def test_deeplabv3plus_resnet50_os8_checkpoint_loads_as_deeplabv3_resnet50(tmp_path):
    """The repository's other torchvision-form architecture; ``_os8`` in the name means stride 8."""
    torch.manual_seed(2)
    source = calibrate_batchnorm(VainFDeepLabV3(num_classes=4, output_stride=8, depth=resnet50),
                                 [torch.rand(2, 3, 64, 64)])
    path = tmp_path / "best_deeplabv3_resnet50_voc_os8.pth"
    torch.save({"model_state": source.state_dict(), "best_score": np.float64(0.5)}, path)
    loaded = load_model(ModelSpec(architecture="deeplabv3_resnet50", weights=str(path)))
    assert loaded.output_stride == 8 and loaded.weights_format == "DeepLabV3Plus-Pytorch"
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x)["out"], source(x), rtol=1e-4, atol=1e-4)


@pytest.mark.real_model
def test_wrong_geometry_loads_but_gives_different_outputs(vainf_checkpoint):
    """Why the geometry matters: stride-8 keys are identical, so the load succeeds silently."""
    path, x, expected = vainf_checkpoint
    wrong = load_model(ModelSpec(weights=str(path), output_stride=8))
    assert wrong.output_stride == 8
    with torch.no_grad():
        got = wrong.module(x)["out"]
    assert (got - expected).abs().max() > 1e-2


def test_torchvision_state_dict_loads_and_drops_the_aux_head(tmp_path):
    torch.manual_seed(0)
    model = deeplabv3_resnet101(weights=None, weights_backbone=None, num_classes=3, aux_loss=True)
    path = tmp_path / "tv.pth"
    torch.save(model.state_dict(), path)
    loaded = load_model(ModelSpec(weights=str(path), class_names=("a", "b", "c")))
    assert loaded.output_stride == 8 and loaded.num_classes == 3 and loaded.module.aux_classifier is None
    assert loaded.class_names == ("a", "b", "c") and not loaded.random_weights
    assert "tv.pth (sha256 " in loaded.weights_identity


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_checkpoints_never_unpickle_arbitrary_objects(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"model_state": Evil()}, f)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(TilepipeError, match="weights-only"):
            load_model(ModelSpec(weights=str(path)))
    # the error is the whole message: torch's notice about the pickle protocol is not printed beside it
    assert [str(w.message) for w in caught] == []


def test_missing_checkpoint_and_wrong_class_count_are_clear_errors(tmp_path):
    with pytest.raises(TilepipeError, match="no such checkpoint"):
        load_model(ModelSpec(weights=str(tmp_path / "nope.pth")))
    model = deeplabv3_resnet101(weights=None, weights_backbone=None, num_classes=3)
    torch.save(model.state_dict(), tmp_path / "three.pth")
    with pytest.raises(TilepipeError, match="3-class head"):
        load_model(ModelSpec(weights=str(tmp_path / "three.pth"), num_classes=21))


def test_default_weights_offline_say_how_to_pass_a_file(offline_weights):
    """The real download path is the default; without network the error names the file to provide."""
    with pytest.raises(TilepipeError) as err:
        load_model(ModelSpec(weights="default"))
    message = str(err.value)
    assert "deeplabv3_resnet101_coco-586e9e4e.pth" in message and "--weights PATH" in message


def test_random_weights_are_flagged():
    loaded = load_model(ModelSpec(architecture="standin", weights="none"))
    assert loaded.random_weights and loaded.weights_identity.startswith("random")


def test_bands_a_model_card_or_checkpoint_wants_but_the_file_lacks_say_so(tmp_path):
    """A 3-band file: the card's four bands, or a 4-channel checkpoint, are refused naming the card
    or the checkpoint and the file's band count, not a ``--bands`` the user never typed."""
    import yaml

    from tests.conftest import smooth_image, write_geotiff
    from tests.test_own_model import four_band_model

    three = write_geotiff(tmp_path / "three.tif", smooth_image(64, 64))
    card = tmp_path / "landcover.yaml"
    card.write_text(yaml.safe_dump({"bands": [1, 2, 3, 4]}))
    with pytest.raises(TilepipeError) as caught:
        tilepipe.plan(str(three), model="standin", weights="none", model_card=str(card))
    assert str(caught.value) == f"{three}: the model card {card} selects bands [1, 2, 3, 4]; the file has 3"
    checkpoint = tmp_path / "rgbn.pt"
    torch.save(four_band_model().state_dict(), checkpoint)
    with pytest.raises(TilepipeError, match=r"rgbn\.pt .*takes 4 input channels; the file has 3 band\(s\)$"):
        tilepipe.plan(str(three), model="lraspp_mobilenet_v3_large", weights=str(checkpoint), scaling="0,255")


def test_bands_a_model_card_selects_from_a_dicom_series_name_the_card(tmp_path):
    """A DICOM image gives all its samples or none: a card's band list is refused naming the card
    and the samples the series has (one, for a CT), not a ``--bands`` the user never typed."""
    import yaml

    from tilepipe.testing import write_ct_series

    write_ct_series(tmp_path / "ct", slices=2, size=32)
    card = tmp_path / "landcover.yaml"
    card.write_text(yaml.safe_dump({"bands": [1, 2, 3]}))
    with pytest.raises(TilepipeError) as caught:
        tilepipe.plan(str(tmp_path / "ct"), model="standin", weights="none", model_card=str(card))
    assert str(caught.value) == (f"{tmp_path / 'ct'}: the model card {card} selects bands [1, 2, 3]; "
                                 "a DICOM image gives all its samples (1 here)")
