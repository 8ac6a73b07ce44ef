"""The binding loss gap: exactly 0 for a teacher that reads its prompt as a bag of words."""
import torch

from backbones.toy import ToyBackbone
from train.binding_probe import binding_gap


def _tiny(kind):
    bb = ToyBackbone.new(layers=1, heads=2, head_dim=8, text_width=16, text_layers=1, seed=0, text_encoder=kind)
    bb.denoiser.eval()
    bb.text_encoder.eval()
    return bb


def test_a_bag_of_words_teacher_has_no_gap_and_an_order_aware_one_has():
    torch.set_num_threads(1)
    bow = _tiny("t5")
    with torch.no_grad():  # without its relative-position bias T5 cannot see word order at all
        bow.text_encoder.encoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight.zero_()
    flat = binding_gap(bow, n=8, batch_size=8)
    ordered = binding_gap(_tiny("bert"), n=8, batch_size=8)
    assert set(flat) == {"n", "definition", "color_attr", "position"} and flat["n"] == 8
    for task in ("color_attr", "position"):
        assert all(g == 0 for g in flat[task].values()), flat  # the same words in another order: the same loss
        assert all(g != 0 for g in ordered[task].values()), ordered
