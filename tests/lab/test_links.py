"""Link conditions without a lab: parsing, presets, the topology's link section, and the userspace
emulator's per-direction decisions (loss, rate, limit, jitter) driven with a fake clock."""

import random
import statistics

import pytest

from lab.errors import ConfigError, UnknownNode
from lab.world import links, netem, topology
from lab.world.linkemu import Direction, Lateness, direction_rng
from lab.world.links import Conditions, parse_conditions, split_link_option


def test_conditions_parse_from_netem_words_and_print_back():
    c = parse_conditions("delay=40ms,jitter=5ms,loss=1%,rate=20mbit")
    assert c == Conditions(delay_ms=40, jitter_ms=5, loss=0.01, rate_bit=20_000_000)
    assert parse_conditions(c.spec) == c
    assert parse_conditions("delay=500us").delay_ms == 0.5 and parse_conditions("delay=0.2s").delay_ms == 200
    assert parse_conditions("rate=10mbps").rate_bit == 80_000_000  # bytes/s, as tc
    assert parse_conditions("clear").is_clear and parse_conditions("clear").spec == "clear"


def test_a_preset_can_be_refined():
    c = parse_conditions("continental,loss=1%")
    assert c.delay_ms == links.PRESETS["continental"].delay_ms and c.loss == 0.01
    assert parse_conditions({"preset": "lan", "delay": "1ms"}).delay_ms == 1.0


@pytest.mark.parametrize("text, words", [
    ("delay=4x", "not a duration"),
    ("loss=0.01", "give a percentage"),
    ("loss=120%", "within 0..100%"),
    ("rate=20", "not a rate"),
    ("bogus=1", "unknown link condition 'bogus'"),
    ("satellite", "unknown link preset 'satellite'"),
    ("delay=1ms,lan", "a preset name goes first"),
    ("limit=0", "limit must be"),
])
def test_bad_conditions_are_one_clear_error(text, words):
    with pytest.raises(ConfigError, match=words):
        parse_conditions(text)


def test_link_option_names_node_and_segment():
    assert split_link_option("nat-a:public=delay=20ms") == ("nat-a:public", Conditions(delay_ms=20))
    for bad in ("nat-a", "nat-a=", "=delay=1ms"):
        with pytest.raises(ConfigError, match="NODE"):
            split_link_option(bad)


def test_a_link_is_a_node_and_segment_of_the_topology():
    t = topology.load("fig1")
    assert t.link_key("nat-a") == ("nat-a", "public")  # a router's WAN by default
    assert t.link_key("a") == ("a", "lan-a") and t.link_key("nat-a:lan-a") == ("nat-a", "lan-a")
    with pytest.raises(UnknownNode):
        t.link_key("nat-a:lan-b")
    with pytest.raises(UnknownNode):
        t.link_key("nobody")


def test_wan_is_every_router_s_public_link_in_any_world():
    assert topology.load("fig4").link_keys("wan") == [("nat-a", "public"), ("nat-b", "public")]
    zoo = topology.load("zoo")
    keys = zoo.link_keys("wan")  # the home NATs behind the CGN reach the internet through its link
    assert keys and all(zoo.segments[s].kind == "public" and zoo.node(n).role == "router" for n, s in keys)
    assert "cgn" in {n for n, _ in keys} and "nat-a" not in {n for n, _ in keys}
    t = zoo.with_links({"wan": Conditions(delay_ms=20)})
    assert {k for k, c in t.conditions.items() if c.delay_ms == 20} == set(keys)
    data = dict(topology.load("fig1").source)
    data["nodes"] = dict(data["nodes"]) | {"wan": data["nodes"]["sink"]}
    with pytest.raises(ConfigError, match="reserved"):
        topology.from_dict(data)


def test_topology_yaml_declares_conditions_and_overrides_keep_them_in_the_source():
    data = dict(topology.load("fig1").source)
    data["conditions"] = {"nat-a": "continental", "b:lan-b": {"delay": "2ms", "loss": "5%"}}
    data["link_seed"] = 3
    t = topology.from_dict(data)
    assert t.conditions == {("nat-a", "public"): links.PRESETS["continental"],
                            ("b", "lan-b"): Conditions(delay_ms=2, loss=0.05)}
    assert t.link_seed == 3
    t2 = t.with_links({"nat-a": Conditions(), "server": parse_conditions("delay=7ms")})
    assert ("nat-a", "public") not in t2.conditions and t2.conditions[("server", "public")].delay_ms == 7
    assert topology.from_dict(t2.source).conditions == t2.conditions  # what a backend stores survives


def test_regions_give_a_delay_per_destination():
    data = dict(topology.load("fig1").source)
    data["regions"] = {"nodes": {"nat-a": "europe", "nat-b": "asia", "server": "america"},
                       "rtt_ms": {"europe/asia": 180, "europe/america": "90ms", "asia/america": 150}}
    t = topology.from_dict(data)
    assert t.regions.one_way_ms("nat-a", "nat-b") == 90 and t.regions.one_way_ms("server", "nat-a") == 45
    assert t.regions.one_way_ms("nat-a", "sink") == 0  # no region: no extra delay
    data["regions"]["rtt_ms"].pop("asia/america")
    with pytest.raises(ConfigError, match="no rtt_ms for america/asia"):
        topology.from_dict(data)
    data["regions"] = {"nodes": {"a": "europe"}, "rtt_ms": {}}
    with pytest.raises(ConfigError, match="no public link"):
        topology.from_dict(data)


def test_netem_arguments_follow_tc():
    args = netem.qdisc_args(parse_conditions("delay=20ms,jitter=5ms,loss=1%,rate=20mbit"))
    assert args == ["netem", "limit", "1000", "delay", "20000us", "5000us", "loss", "random", "1%",
                    "rate", "20000000bit"]
    assert netem.qdisc_args(parse_conditions("loss=5%")) == ["netem", "limit", "1000", "loss", "random", "5%"]


# ---- the emulator's decisions, one direction at a time -------------------------------------------


def _direction(spec: str, seed: int = 1) -> Direction:
    return Direction(parse_conditions(spec), random.Random(seed))


def test_delay_alone_releases_each_frame_delay_later():
    d = _direction("delay=20ms")
    assert d.admit(1.0, 100) == pytest.approx(1.020)
    assert d.admit(1.5, 100, extra_s=0.045) == pytest.approx(1.565)  # a region's extra delay


def test_rate_serialises_frames_behind_each_other():
    d = _direction("rate=8mbit,delay=1ms")  # 1000 bytes take 1 ms
    times = [d.admit(0.0, 1000) for _ in range(3)]
    assert times == pytest.approx([0.002, 0.003, 0.004])
    assert d.admit(1.0, 1000) == pytest.approx(1.002)  # an idle link starts afresh


def test_the_queue_limit_drops_what_does_not_fit():
    d = _direction("rate=8kbit,limit=3")
    assert [d.admit(0.0, 100) is not None for _ in range(5)] == [True, True, True, False, False]
    d.released()
    assert d.admit(0.0, 100) is not None and d.overflow == 2


def test_loss_is_bernoulli_per_frame_and_reproducible_by_seed():
    def fates(seed: int) -> list[bool]:
        d = _direction("loss=10%,limit=100000", seed)
        return [d.admit(0.0, 100) is None for _ in range(20000)]

    assert 1800 < sum(fates(5)) < 2200
    assert fates(5) == fates(5) and fates(5) != fates(6)
    a, b = direction_rng(7, "nat-a:public", "up"), direction_rng(7, "nat-a:public", "down")
    assert [a.random() for _ in range(3)] != [b.random() for _ in range(3)]  # directions independent


def test_jitter_is_uniform_around_the_delay_and_never_negative():
    d = _direction("delay=10ms,jitter=4ms,limit=100000")
    delays = [d.admit(0.0, 100) * 1000 for _ in range(20000)]
    assert 6.0 <= min(delays) and max(delays) <= 14.0
    assert statistics.mean(delays) == pytest.approx(10.0, abs=0.1)
    assert statistics.stdev(delays) == pytest.approx(4 / 3**0.5, rel=0.05)
    assert min(_direction("delay=1ms,jitter=5ms").admit(0.0, 1) for _ in range(1000)) == 0.0


def test_lateness_histogram_reports_its_quantiles():
    late = Lateness()
    for us in [5] * 98 + [150, 3000]:
        late.add(us / 1e6)
    stats = late.stats()
    assert stats["frames"] == 100 and stats["p99_us_at_most"] == 200.0 and stats["worst_us"] == 3000.0


def test_a_path_crosses_every_link_between_two_nodes():
    t = topology.load("fig1")
    assert links.path_links(t, "a", "b") == [("a", "lan-a"), ("nat-a", "lan-a"), ("nat-a", "public"),
                                             ("nat-b", "public"), ("nat-b", "lan-b"), ("b", "lan-b")]
    assert links.path_links(t, "a", "noise-a") == [("a", "lan-a"), ("noise-a", "lan-a")]
    conds = {("nat-a", "public"): parse_conditions("delay=20ms"), ("a", "lan-a"): parse_conditions("delay=1ms"),
             ("nat-b", "public"): parse_conditions("delay=5ms,jitter=2ms")}
    assert links.one_way_ms(t, conds, None, "a", "b") == 26
    assert links.one_way_ms(t, conds, None, "b", "server", with_jitter=True) == 7
    regions = links.parse_regions({"nodes": {"nat-a": "eu", "nat-b": "asia"}, "rtt_ms": {"eu/asia": 100}})
    assert links.one_way_ms(t, conds, regions, "a", "b") == 76
    assert links.one_way_ms(t, conds, regions, "a", "server") == 21  # the server has no region
