"""``dp2pt-lab``: bring labs up and down, configure NATs, run scenario cells, act inside nodes.

    dp2pt-lab up [TOPOLOGY] [--nat-a PROFILE] [--nat-b PROFILE] [--nat ROUTER=PROFILE] [--prefix P]
                 [--link NODE[:SEG]=COND ...] [--image NODE=IMAGE ...]   (docker: a peer from your own image)
    dp2pt-lab run [SCENARIO|all] [--agent dp2pt|ice|command] [--nat-a P --nat-b P --variant V --k K
                  --cut-a N --cut-b N] [--command "PROG ARGS" [--command-b "B'S PROG"]] [--turn] [--timeout S] [--link ...]
                  [--topology zoo --peers A,B --nat ROUTER=P --noise-a NODE --collision]
    dp2pt-lab link [NODE[:SEG]=COND ...] [--clear-all]   (a running lab's link conditions)
    dp2pt-lab exec NODE -- CMD [ARG...]
    dp2pt-lab nat ROUTER PROFILE          (re-load a router's NAT: fresh mappings)
    dp2pt-lab verify-nat [PROFILE...]     (coturn RFC 5780 discovery behind each profile)
    dp2pt-lab profiles | status | down [PREFIX] [--all]

Errors are one line on stderr and a non-zero exit (the :class:`~lab.errors.LabError` exit code),
never a traceback. Other modules add subcommands: each module of :data:`PLUGINS` that imports gets
``register(subparsers)`` and sets its handler with ``set_defaults(func=...)``; a handler receives
the parsed ``args`` and returns an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import time

from dp2pt.errors import Dp2ptError
from lab.world import backends, linkctl, links, nat, topology
from lab.errors import ConfigError, LabError, LabNotFound, ScenarioError

PLUGINS = ("lab.study", "lab.report", "lab.bench")
PROG = "dp2pt-lab"


def _select_lab(backend, prefix: str | None):
    """The lab ``--lab`` names, or the only one that is up."""
    if prefix:
        return backend.attach(prefix)
    labs = [info.prefix for info in backend.list()]
    if not labs:
        raise LabNotFound(f"no lab is up ({PROG} up first)")
    if len(labs) > 1:
        raise ConfigError(f"several labs are up ({', '.join(labs)}): choose one with --lab")
    return backend.attach(labs[0])


def _nat_choices(topo, args) -> dict[str, str]:
    """Router -> profile: ``--nat-a``/``--nat-b`` (or $NAT_A/$NAT_B for the compose world) and
    ``--nat ROUTER=PROFILE`` over the topology's declared profiles. A bad profile fails here, before
    anything is built."""
    chosen = {r: topo.node(r).nat for r in topo.by_role("router") if topo.node(r).nat}
    pairs = [("nat-a", args.nat_a), ("nat-b", args.nat_b)]
    pairs += [tuple(item.split("=", 1)) if "=" in item else (item, "") for item in getattr(args, "nat", None) or []]
    for router, profile in pairs:
        if profile:
            if topo.node(router).role != "router":
                raise ConfigError(f"{router!r} is not a router of {topo.name}")
            chosen[router] = nat.parse_profile(profile).spec
        elif router not in ("nat-a", "nat-b"):
            raise ConfigError(f"--nat {router!r}: use ROUTER=PROFILE (e.g. cgn=cgnat:block=64)")
    return chosen


def _apply_nats(lab, chosen: dict[str, str]) -> list[str]:
    return [f"{router}={lab.configure_nat(router, profile).spec}" for router, profile in chosen.items()]


def _topology_with_links(name: str, args) -> "topology.Topology":
    """The topology, with ``--link`` overrides and ``--link-seed``; ``--link-mechanism`` takes effect
    for this invocation (the backends read it from the environment)."""
    topo = topology.load(name)
    overrides = dict(links.split_link_option(text) for text in args.link or [])
    if overrides or args.link_seed is not None:
        topo = topo.with_links(overrides, seed=args.link_seed)
    _link_mechanism(args)
    return topo


def _link_mechanism(args) -> None:
    if args.link_mechanism:
        linkctl.resolve_mechanism(args.link_mechanism)  # a bad or missing mechanism fails before any work
        os.environ[linkctl.ENV_MECHANISM] = args.link_mechanism


def cmd_up(args) -> int:
    b = backends.get(args.backend)
    topo = _topology_with_links(args.topology, args)
    chosen = _nat_choices(topo, args)
    t0 = time.monotonic()
    lab = b.up(topo, prefix=args.prefix, images=_images(args))
    try:
        nats = _apply_nats(lab, chosen)
    except BaseException:
        lab.down()
        raise
    dt = time.monotonic() - t0
    print(f"lab {lab.prefix} up: {topo.name} on {b.name} in {dt:.3f} s; nodes: {', '.join(lab.nodes)}"
          + (f"; NAT {', '.join(nats)}" if nats else ""))
    for line in linkctl.status_lines(lab.prefix):
        print(line)
    return 0


def cmd_down(args) -> int:
    b = backends.get(args.backend)
    if args.all:
        gone = b.down_all()
        print(f"removed {len(gone)} lab(s)" + (f": {', '.join(gone)}" if gone else ""))
        return 0
    prefix = args.prefix or _select_lab(b, None).prefix
    b.down(prefix)
    print(f"lab {prefix} down")
    return 0


def cmd_status(args) -> int:
    b = backends.get(args.backend)
    labs = b.list()
    if not labs:
        print("no lab is up")
    for info in labs:
        nats = "  " + " ".join(f"{r}={p}" for r, p in sorted(info.nats.items())) if info.nats else ""
        print(f"{info.prefix}  {info.backend}  {info.topology}  nodes={len(info.nodes)}  "
              f"processes={info.processes}{nats}")
        for line in linkctl.status_lines(info.prefix):
            print(line)
    return 0


def cmd_link(args) -> int:
    """Show, set or clear a running lab's link conditions."""
    b = backends.get(args.backend)
    lab = _select_lab(b, args.lab)
    _link_mechanism(args)
    overrides = dict(links.split_link_option(text) for text in args.links)
    if args.clear_all:
        overrides.update({key: links.Conditions() for key in (l.key for l in linkctl.describe(lab.prefix))})
    if overrides or args.link_mechanism or args.link_seed is not None:
        linkctl.apply(lab, overrides, mechanism=args.link_mechanism, seed=args.link_seed)
    lines = linkctl.status_lines(lab.prefix)
    print(f"lab {lab.prefix}: " + ("links:" if lines else "no conditioned link"))
    for line in lines:
        print(line)
    return 0


def cmd_links(args) -> int:
    """The presets (``dp2pt-lab link-presets``)."""
    for name, cond in links.PRESETS.items():
        print(f"{name:17s} {cond.spec:45s} {links.PRESET_DESCRIPTIONS[name]}")
    print("conditions: delay=40ms,jitter=5ms,loss=1%,rate=20mbit[,limit=FRAMES]; a preset may come first "
          "(continental,loss=1%); clear removes them")
    return 0


def cmd_profiles(args) -> int:
    for name in nat.PROFILE_NAMES:
        p = nat.parse_profile(name)
        alloc = p.allocation.value + (f"/block {p.block}" if p.block else "")
        print(f"{name:22s} {p.mapping.name:4s}/{p.filtering.name:4s} {alloc:19s} {nat.DESCRIPTIONS[name]}")
    print("parameters (NAME:key=value,...; e.g. port-restricted-cone:hairpin=1, symmetric-sequential:block=64):")
    for key, meaning in nat.PARAMETERS.items():
        print(f"  {key:8s} {meaning}")
    return 0


def cmd_exec(args) -> int:
    b = backends.get(args.backend)
    lab = _select_lab(b, args.lab)
    argv = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not argv:
        raise ConfigError("exec needs a command: dp2pt-lab exec NODE -- CMD [ARG...]")
    return lab.interactive(args.node, argv)


def cmd_nat(args) -> int:
    b = backends.get(args.backend)
    lab = _select_lab(b, args.lab)
    prof = lab.configure_nat(args.router, args.profile)
    print(f"{args.router}: {prof.spec} ({prof.mapping.value} mapping, {prof.filtering.value} filtering, "
          f"{prof.allocation.value} ports)")
    return 0


def cmd_verify_nat(args) -> int:
    from lab.world import rfc5780

    b = backends.get(args.backend)
    b.check()
    profiles = args.profiles or list(nat.PROFILE_NAMES)
    verdicts = rfc5780.verify_all(b, profiles)  # labs side by side, two profiles each, concurrently
    bad = 0
    for p in profiles:
        v = verdicts[p]
        bad += not v.matches
        hp = lambda h: "hairpin" if h else "no-hairpin"  # noqa: E731
        life = "" if v.lifetime is None else f"  lifetime alive/gone {v.lifetime[0]}/{not v.lifetime[1]}"
        print(f"{p:40s} label {v.expected_mapping}/{v.expected_filtering}/{hp(v.expected_hairpin)}  "
              f"natdiscovery {v.mapping}/{v.filtering}/{hp(v.hairpin)}{life}  {'OK' if v.matches else 'MISMATCH'}")
    return 1 if bad else 0


def cmd_run(args) -> int:
    from lab.scenarios import matrix
    from lab.scenarios.run import Cell, Runner, new_run_dir

    b = backends.get(args.backend)
    if args.scenario in ("all", "matrix"):
        cells = [c for c in matrix.load() if args.agent in (None, c.agent)]
        if not cells:
            raise ConfigError(f"scenarios/matrix.csv has no {args.agent} cell")
    elif args.scenario:
        cells = [c for c in matrix.load() if c.id == args.scenario]
        if not cells:
            raise ConfigError(f"unknown scenario {args.scenario!r}: a cell id of scenarios/matrix.csv "
                              f"(python -m lab.scenarios.matrix lists them), 'all', or none with --nat-a/--nat-b")
    else:
        if not (args.nat_a and args.nat_b):
            raise ConfigError("run needs a SCENARIO (cell id or 'all') or both --nat-a and --nat-b")
        agent = args.agent or ("command" if args.command else "dp2pt")
        world = "" if args.topology in ("fig1", "fig4") else args.topology
        cells = [Cell(args.nat_a, args.nat_b, args.variant, args.k, args.schedule, args.cut_a, args.cut_b,
                      agent=agent, command=args.command, command_b=args.command_b, turn=args.turn,
                      timeout=args.timeout,
                      world=world, peers=args.peers or "", nats=" ".join(args.nat or []), noise_a=args.noise_a or "",
                      collision=args.collision)]
    own = args.lab is None  # a lab of its own (0.3 s) rather than someone else's by accident
    if not own and (args.link or args.link_seed is not None):
        raise ConfigError("--link applies to the lab run brings up; change a running lab's links with dp2pt-lab link")
    images = _images(args)
    if not own and images:
        raise ConfigError("--image applies to the lab run brings up (or to dp2pt-lab up)")
    run_dir = new_run_dir(args.run_dir)  # before the lab: a failure here must not leave namespaces behind
    worlds: dict[str, list] = {}
    for cell in cells:
        worlds.setdefault(cell.world, []).append(cell)
    unexpected = 0
    for world, group in worlds.items():
        need_fig4 = any(c.variant == "distributed" for c in group)
        name = world or ("fig4" if need_fig4 else args.topology)
        lab = b.up(_topology_with_links(name, args), images=images) if own else _select_lab(b, args.lab)
        try:
            with Runner(lab, run_dir / world if world else run_dir) as runner:
                for cell in group:
                    r = runner.run(cell)
                    if cell.expect is None:
                        mark = ""
                    else:
                        mark = "  as expected" if r.as_expected else f"  UNEXPECTED (want {cell.expect})"
                    unexpected += not r.as_expected
                    err = r.path_error or r.a.get("error") or r.b.get("error") or ""
                    detail = f"  [{err}]" if err and not r.as_expected else ""
                    print(f"{cell.id:75s} {r.outcome:7s} {r.seconds:6.2f}s{mark}{detail}", flush=True)
        finally:
            if own:
                lab.down()
    print(f"artifacts: {run_dir}")
    return 1 if unexpected else 0


def cmd_compose(args) -> int:
    """``compose [TOPOLOGY]`` prints the compose file; ``compose up|down|shell`` drives the compose world."""
    from lab.world import compose
    from lab.world.backends.compose import ComposeWorld

    action, rest = args.what, args.rest
    if action not in ("up", "down", "shell", "status"):
        if rest:
            raise ConfigError(f"compose takes one topology, got {' '.join([action, *rest])!r}")
        source = topology.resolve(action or topology.DEFAULT_TOPOLOGY)
        sys.stdout.write(compose.render(topology.load(source), source))
        return 0
    world = ComposeWorld(args.topology)
    if action == "down":
        world.down()
        print("lab: down: no container, network or host rule of the compose lab is left")
        return 0
    if action == "shell":
        if len(rest) != 1:
            raise ConfigError("compose shell needs one NODE (make lab-shell NODE=a)")
        return world.lab().interactive(world.node_name(rest[0]), ["bash"])
    if action == "status":
        print("compose lab: " + ("up" if world.running() else "down"))
        return 0
    return _compose_up(world, args)


def _compose_up(world, args) -> int:
    """``make lab-up``: the compose world up, then one traversal judged as ``dp2pt-lab run`` judges."""
    import json

    from lab.scenarios.run import Cell, Runner, new_run_dir

    args.nat_a, args.nat_b = args.nat_a or os.environ.get("NAT_A"), args.nat_b or os.environ.get("NAT_B")
    chosen = _nat_choices(world.topology, args)
    t0 = time.monotonic()
    lab = world.up(chosen)
    print(f"lab: up in {time.monotonic() - t0:.1f} s: {world.topology.name} in compose project "
          f"{lab.prefix} ({', '.join(f'{r}={p}' for r, p in chosen.items())}), {len(lab.nodes)} containers",
          flush=True)
    if args.no_traversal:
        return 0
    a, b = world.topology.by_role("peer")[:2]
    cell = Cell(chosen[world.topology.router_of(a)], chosen[world.topology.router_of(b)], "basic")
    with Runner(lab, new_run_dir(args.run_dir), servers_running=True) as runner:
        result = runner.run(cell)
    print(json.dumps(result.b), flush=True)
    print(f"lab: {result.outcome}: {_path_line(result)}")
    print(f"lab: artifacts: {result.dir}")
    if result.outcome != "direct":
        raise ScenarioError(f"the traversal did not go direct ({result.path_error or result.b.get('error')}); "
                            "the lab stays up: make lab-shell NODE=a, make lab-down")
    print("lab: hands-on: make lab-shell NODE=a | remove everything: make lab-down")
    return 0


def _path_line(result) -> str:
    """One line on what the capture showed (the runner's proof, lab.world.capture)."""
    flows = result.path.get("d2pt", [])
    if result.outcome != "direct":
        return result.path_error or "no direct path"
    pairs = sorted({" <-> ".join(sorted((f["src"], f["dst"]))) for f in flows})
    total = sum(f["count"] for f in flows)
    return (f"direct path proven from the capture: {total} D2PT datagrams, all between the NATs' WAN "
            f"addresses ({', '.join(pairs)}), none via a location server ({result.path['pcap']})")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="dp2pt lab: NAT routers in network namespaces or containers")
    p.add_argument("--backend", default=None, help=f"netns (default) or docker; env {backends.ENV_VAR}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="bring a topology up (stays up until down)")
    up.add_argument("topology", nargs="?", default=topology.DEFAULT_TOPOLOGY, help="fig1 (default), fig4, or a .yaml")
    up.add_argument("--nat-a", help="NAT profile of nat-a (see: dp2pt-lab profiles)")
    up.add_argument("--nat-b", help="NAT profile of nat-b")
    up.add_argument("--nat", action="append", metavar="ROUTER=PROFILE", help="NAT profile of any router (repeatable)")
    up.add_argument("--prefix", help="lab prefix (default: a fresh d2pXXXXX)")
    _link_options(up)
    _image_option(up)
    up.set_defaults(func=cmd_up)

    run = sub.add_parser("run", help="run a scenario cell (or the whole matrix) and classify the outcome")
    run.add_argument("scenario", nargs="?", help="cell id from scenarios/matrix.csv, or 'all'")
    run.add_argument("--lab", help="prefix of a running lab to reuse (default: a fresh lab, removed afterwards)")
    run.add_argument("--topology", default="fig1", help="fig1 (default), fig4, zoo or a .yaml: the cell's world")
    run.add_argument("--nat-a", help="profile of the NAT nearest A")
    run.add_argument("--nat-b", help="profile of the NAT nearest B")
    run.add_argument("--nat", action="append", metavar="ROUTER=PROFILE",
                     help="profile of another NAT on the peers' paths (zoo: --nat cgn=cgnat:hairpin=1)")
    run.add_argument("--peers", help="A,B: which peers of the world (zoo: a,b double NAT; a,c one CGN; b,b2 one LAN)")
    run.add_argument("--noise-a", help="noise host cutting in on A's side (zoo: subs, the CGN's other subscribers)")
    run.add_argument("--collision", action="store_true",
                     help="a neighbour of A talks to probe 2's destination from A's port first")
    run.add_argument("--agent", choices=("dp2pt", "ice", "command"),
                     help="what runs on A and B (default: every agent's cells with 'all', else dp2pt)")
    run.add_argument("--variant", help="dp2pt: basic (default), simplified, improved, distributed; "
                                       "ice: stun (default), turn; command: a label")
    run.add_argument("--k", type=int)
    run.add_argument("--schedule")
    run.add_argument("--cut-a", type=int, default=0, help="flows cutting in on A's side (after probe 2)")
    run.add_argument("--cut-b", type=int, default=0, help="flows cutting in on B's side")
    run.add_argument("--command", help="--agent command: the program run on A and B, with {LAB_...} placeholders "
                                       "(lab/README.md, Agents)")
    run.add_argument("--command-b", help="--agent command: B's program when it is not A's (default: --command)")
    run.add_argument("--turn", action="store_true", help="--agent command: give the program a TURN server (coturn)")
    run.add_argument("--timeout", type=float, help="seconds the agent has (default: the agent's)")
    run.add_argument("--run-dir", default="runs", help="where run directories go (default ./runs)")
    _link_options(run)
    _image_option(run)
    run.set_defaults(func=cmd_run)

    lk = sub.add_parser("link", help="show or change a running lab's link conditions (delay, jitter, loss, rate)")
    lk.add_argument("--lab", help="lab prefix (default: the only one up)")
    lk.add_argument("links", nargs="*", metavar="NODE[:SEGMENT]=COND",
                    help="e.g. nat-a=delay=40ms,jitter=5ms,loss=1%%,rate=20mbit, nat-b=continental, a:lan-a=clear")
    lk.add_argument("--clear-all", action="store_true", help="remove every link's conditions")
    lk.add_argument("--link-mechanism", choices=linkctl.MECHANISMS,
                    help="auto (netem where the kernel has it), netem, or userspace; env " + linkctl.ENV_MECHANISM)
    lk.add_argument("--link-seed", type=int, help="seed of the links' random draws (loss, jitter)")
    lk.set_defaults(func=cmd_link)
    sub.add_parser("link-presets", help="list link condition presets").set_defaults(func=cmd_links)

    ex = sub.add_parser("exec", help="run a command inside a node: exec NODE -- CMD")
    ex.add_argument("--lab", help="lab prefix (default: the only one up)")
    ex.add_argument("node")
    ex.add_argument("cmd", nargs=argparse.REMAINDER)
    ex.set_defaults(func=cmd_exec)

    n = sub.add_parser("nat", help="(re)configure a router's NAT profile")
    n.add_argument("--lab")
    n.add_argument("router")
    n.add_argument("profile")
    n.set_defaults(func=cmd_nat)

    v = sub.add_parser("verify-nat", help="classify profiles with coturn's turnutils_natdiscovery (RFC 5780)")
    v.add_argument("profiles", nargs="*")
    v.set_defaults(func=cmd_verify_nat)

    c = sub.add_parser("compose", help="the compose world: print a topology's compose file, or up/down/shell",
                       description="compose [TOPOLOGY] prints the compose file of a topology (fig1 -> compose.yaml); "
                                   "compose up|down|shell [NODE] drives the compose world (make lab-up/-down/-shell).")
    c.add_argument("what", nargs="?", help="a topology (fig1, fig4, a .yaml), or up, down, shell, status")
    c.add_argument("rest", nargs="*", help="shell: the node")
    c.add_argument("--topology", default="fig1", help="up/down/shell: the world (default fig1 = compose.yaml)")
    c.add_argument("--nat-a", help="up: nat-a's profile (default $NAT_A, else the topology's)")
    c.add_argument("--nat-b", help="up: nat-b's profile (default $NAT_B, else the topology's)")
    c.add_argument("--no-traversal", action="store_true", help="up: only bring the world up")
    c.add_argument("--run-dir", default="runs", help="up: where the traversal's artifacts go (default ./runs)")
    c.set_defaults(func=cmd_compose)

    sub.add_parser("profiles", help="list NAT profiles").set_defaults(func=cmd_profiles)
    sub.add_parser("status", help="list running labs").set_defaults(func=cmd_status)

    d = sub.add_parser("down", help="remove a lab (or --all, including leftovers of crashed runs)")
    d.add_argument("prefix", nargs="?")
    d.add_argument("--all", action="store_true")
    d.set_defaults(func=cmd_down)

    _load_plugins(sub)
    return p


def _images(args) -> dict[str, str]:
    """``--image NODE=IMAGE`` (repeatable) as node -> image."""
    images = {}
    for text in args.image or []:
        node, sep, image = text.partition("=")
        if not (sep and node and image):
            raise ConfigError(f"--image {text!r}: use NODE=IMAGE, e.g. a=myorg/app:dev")
        images[node] = image
    return images


def _image_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", action="append", metavar="NODE=IMAGE",
                        help="docker backend: run a peer node from your own image (repeatable; lab/README.md, "
                             "Your own image)")


def _link_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--link", action="append", metavar="NODE[:SEGMENT]=COND",
                        help="link conditions, repeatable: nat-a=delay=40ms,jitter=5ms,loss=1%%,rate=20mbit or "
                             "=PRESET (dp2pt-lab link-presets); without :SEGMENT a router's WAN link; "
                             "wan=... every router's WAN link")
    parser.add_argument("--link-mechanism", choices=linkctl.MECHANISMS,
                        help="auto (netem where the kernel has it, default), netem, or userspace; env "
                             + linkctl.ENV_MECHANISM)
    parser.add_argument("--link-seed", type=int, help="seed of the links' random draws (loss, jitter)")


def _load_plugins(sub) -> None:
    for name in PLUGINS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # the plugin does not exist (yet): skip silently
            print(f"{PROG}: warning: plugin {name} not loaded: {exc}", file=sys.stderr)
            continue
        except Exception as exc:  # a broken plugin must not take the whole CLI down
            print(f"{PROG}: warning: plugin {name} not loaded: {exc}", file=sys.stderr)
            continue
        register = getattr(module, "register", None)
        if callable(register):
            register(sub)


class Terminated(BaseException):
    """SIGTERM arrived. It unwinds the stack as KeyboardInterrupt does (``finally`` takes a lab down),
    but is not the terminal's ^C, which a command in the foreground got too (``exec`` waits for that
    command on ^C; on SIGTERM it leaves)."""


def _terminate_by_unwinding() -> None:
    """From now on a SIGTERM (a CI job's timeout, systemd, kill) ends this process by raising
    :class:`Terminated`, so the lab a command brought up is taken down on the way out instead of being
    left for down --all; a second SIGTERM does not interrupt that clean-up.

    Only in this process: a child forked from it (pyroute2 forks into namespaces, and stops the child
    with SIGTERM) keeps the default, so it dies there instead of running the parent's clean-up.
    """
    owner = os.getpid()
    terminating = False

    def terminate(signum, frame) -> None:  # noqa: ARG001
        nonlocal terminating
        if os.getpid() != owner:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        if not terminating:
            terminating = True
            raise Terminated

    signal.signal(signal.SIGTERM, terminate)


def console() -> int:
    """The ``dp2pt-lab`` program (console script, ``python -m lab.cli``): :func:`main` as a process of
    its own, which may take SIGTERM over (a caller of :func:`main` in its own process keeps its own)."""
    _terminate_by_unwinding()
    return main()


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except (LabError, Dp2ptError) as exc:  # the lab's errors and the model's/protocol's (study, bench)
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print(f"{PROG}: terminated", file=sys.stderr)
        return 143
    except FileNotFoundError as exc:
        print(f"{PROG}: error: {exc.filename or exc}: not found", file=sys.stderr)
        return 3
    except PermissionError as exc:
        print(f"{PROG}: error: permission denied ({exc.filename or exc}); run as root", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(console())
