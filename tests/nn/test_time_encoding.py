"""TimeEncoding (Time2Vec), calendar_fields and CompositeTimeEncoding."""
import datetime

import pytest
import torch

import tempattn.nn as tnn


def test_calendar_fields_match_datetime():
    seconds = torch.cat([torch.randint(-2**34, 2**34, (200,)), torch.tensor([0, -1, 951782400, 4107542400])])
    fields = tnn.calendar_fields(seconds)
    for s, (second_of_day, weekday, day, day_of_year) in zip(seconds.tolist(), fields.tolist()):
        when = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(seconds=s)
        expected = (when.hour * 3600 + when.minute * 60 + when.second, when.weekday(), when.day,
                    when.timetuple().tm_yday)
        assert (second_of_day, weekday, day, day_of_year) == expected, s


def test_float_seconds_are_floored():
    exact = tnn.calendar_fields(torch.tensor([1_700_000_000]))
    assert torch.equal(tnn.calendar_fields(torch.tensor([1_700_000_000.75], dtype=torch.float64)), exact)


def test_time2vec_channels():
    enc = tnn.TimeEncoding(5)
    t = torch.randn(2, 3)
    out = enc(t)
    assert out.shape == (2, 3, 5)
    torch.testing.assert_close(out[..., 0], enc.weight[0] * t + enc.bias[0])
    torch.testing.assert_close(out[..., 1:], torch.sin(t[..., None] * enc.weight[1:] + enc.bias[1:]))
    assert "dim=5" in repr(enc)


def test_composite_seconds_equal_fields():
    enc = tnn.CompositeTimeEncoding(16, n_harmonics=3)
    seconds = torch.randint(0, 2**31, (2, 5))
    out = enc(seconds)
    assert out.shape == (2, 5, 16)
    torch.testing.assert_close(out, enc(fields=tnn.calendar_fields(seconds)))


def test_composite_time_of_day_is_periodic():
    enc = tnn.CompositeTimeEncoding(8, n_harmonics=3)
    fields = torch.tensor([[0.0, 2, 10, 100], [86400.0 - 1e-3, 2, 10, 100]])
    time_of_day = enc._features(fields)[:, : 2 * 3]
    torch.testing.assert_close(time_of_day[1], time_of_day[0], atol=1e-6, rtol=0)


@pytest.mark.parametrize("module,args", [
    (lambda: tnn.TimeEncoding(4), lambda: (torch.randn(2, 3),)),
    (lambda: tnn.CompositeTimeEncoding(8), lambda: (torch.randint(0, 2**31, (2, 3)),)),
])
def test_compile_fullgraph_and_float64(module, args):
    layer = module()
    inputs = args()
    torch.testing.assert_close(torch.compile(layer, fullgraph=True)(*inputs), layer(*inputs))
    layer = layer.to(torch.float64)
    assert layer(*inputs).dtype == torch.float64
    assert all(t.dtype == torch.float64 for t in [*layer.parameters(), *layer.buffers()])


def test_state_dict_round_trip_and_reset():
    enc, clone = tnn.CompositeTimeEncoding(8), tnn.CompositeTimeEncoding(8)
    clone.load_state_dict(enc.state_dict(), strict=True)
    seconds = torch.randint(0, 2**31, (4,))
    torch.testing.assert_close(clone(seconds), enc(seconds))
    enc.reset_parameters()
    assert not torch.allclose(clone(seconds), enc(seconds))


def test_gradcheck_float64():
    enc = tnn.CompositeTimeEncoding(4, n_harmonics=2, dow_dim=2, dom_dim=2, doy_dim=2, dtype=torch.float64)
    fields = tnn.calendar_fields(torch.randint(0, 2**31, (3,)))
    weight = enc.day_of_month.weight.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda w: torch.func.functional_call(enc, {"day_of_month.weight": w}, (), {"fields": fields}), (weight,))


@pytest.mark.parametrize("call,exc,words", [
    (lambda: tnn.TimeEncoding(0), ValueError, ["dim", "positive"]),
    (lambda: tnn.CompositeTimeEncoding(8)(), ValueError, ["seconds/fields", "exactly one", "neither"]),
    (lambda: tnn.CompositeTimeEncoding(8)(torch.zeros(2), fields=torch.zeros(2, 4)), ValueError, ["both"]),
    (lambda: tnn.CompositeTimeEncoding(8)(fields=torch.zeros(2, 3)), ValueError, ["fields", "(..., 4)"]),
    (lambda: tnn.CompositeTimeEncoding(8)([0, 1]), TypeError, ["seconds", "list"]),
])
def test_errors(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    message = str(info.value)
    assert "hint:" in message
    for word in words:
        assert word in message
