"""The family registry: names resolve lazily to Backbone classes; unknown names are a clear error."""
import pytest

from backbones import FAMILIES, backbone_class, load_backbone
from backbones.base import Backbone, BackboneError


@pytest.mark.parametrize("family", ["toy", "sd3", "flux", "sdxl"])
def test_families_resolve_to_their_backbone(family):
    cls = backbone_class(family)
    assert issubclass(cls, Backbone) and cls.family == family


def test_registry_lists_the_four_families():
    assert set(FAMILIES) == {"toy", "sd3", "flux", "sdxl"}


def test_unknown_family_lists_the_known_ones(tmp_path):
    with pytest.raises(BackboneError, match="unknown model family 'sd4'.*flux, sd3, sdxl, toy"):
        load_backbone("sd4", tmp_path)


@pytest.mark.parametrize("family", ["sd3", "flux", "sdxl"])
def test_missing_folder_names_the_path(family, tmp_path):
    with pytest.raises(BackboneError, match=f"does not exist.*{family}-weights"):
        load_backbone(family, tmp_path / f"{family}-weights")
