#!/usr/bin/env python3
"""Command-line fuzz pass for kiln (run by t_cli_fuzz.sh against an ASan+UBSan build).

Argument vectors come from two sources, both deterministic:
  * a table: every value-taking flag of every command x the bad values of its
    kind (sizes, integers, CPU counts, paths, volumes, ports, signals, enums,
    free strings), each flag without its value, bad booleans, unknown flags;
  * mutations of valid command lines (a value swapped for a bad one, a token
    dropped, doubled, cut, joined with '=', a flag inserted), seeded.

Every vector names an image, container, context or registry that does not
exist (registries only on 127.0.0.1), so nothing starts a container or leaves
the machine.  Each run is under `timeout`; the assertions:
  * no AddressSanitizer/UBSan/LeakSanitizer report, no death by a signal;
  * exit code 125 for a bad run/exec command line (exec may also say 1 when the
    line was valid and the container is missing), 2 for a bad command line
    elsewhere (1 when the mutation happened to be valid and failed later);
  * stderr is one line starting with "kiln: " (help output goes to stdout).
Usage: cli_fuzz.py KILN WORKDIR [SEED]
"""
import concurrent.futures
import os
import random
import subprocess
import sys
import time

KILN, WORK = sys.argv[1], sys.argv[2]
SEED = int(sys.argv[3]) if len(sys.argv) > 3 else 11

ABSENT_IMG = "kiln-fuzz-absent:1"
IMG = "fuzz:1"                     # imported before the pass
CTR = "kiln-fuzz-absent-ctr"
REG = "127.0.0.1:9"                # discard port: nothing listens, refused at once
CTX = os.path.join(WORK, "no-such-context")
LONG = "x" * 5000

BAD = {
    "bytes": ["nan", "inf", "-5m", "1q", " 1g", "1g ", "", "99999999999999999999", "1e3", "0x10", "1..5g",
              "8192p", LONG],
    "memory": ["1", "5m", "6291455", "nan", "inf", "99999999999999999999", "-1", "", "1q", " 64m"],
    "swap": ["nan", "-2", "1q", "", "inf", "99999999999999999999", " 1g"],
    "int": ["abc", "1.5", "", " 1", "1e3", "99999999999999999999", "-99999999999999999999", "nan", "0x1", "-"],
    "cpus": ["nan", "inf", "0", "-1", "0.001", "1e9", "1/2", "99999", "", "0.0000000001"],
    "tail": ["abc", "-1", "1.5", "", "ALL", "nan", "99999999999999999999", " 5"],
    "signal": ["FOO", "0", "65", "-9", "9x", "SIG", "", " 9", "SIGKILLX", "99999999999999999999", "KILL9"],
    "abspath": ["relative", "", "./x", "x/y", "~/x"],
    "volume": ["/tmp::/x", "/tmp:/x:rw,zz", "/tmp:x", "x:/y", "/tmp", "", ":", "::", "/tmp:/x:", "/tmp:/x:ro:z",
               "/tmp:/", "/tmp:/x:ro,rw", "/tmp:/x:shared", "/tmp:/x:nocopy", "/tmp:/x:" + LONG, "vol:/data"],
    "tmpfs": ["run", "", "/", "/run:size=1q", "/run:size=nan", "/run:mode=999", "/run:bogus", "/run:uid=-1",
              "/run:size=101%", "/run:,", "/run:" + LONG],
    "port": ["0:80", "80:0", "65536", "a:b", "1:2:3:4", "80/sctp", "::80", "localhost:80:80", "80-81:80-81",
             "", "+80", "99999999999999999999:1", "80:80/tcp/udp"],
    "uidmap": ["1:2:3", "0:-1:5", "0:1:0", "0:4294967295:2", "0:1", "0:1:2:3", "", "0: 1:5", "a:b:c"],
    "enum": ["bogus", "", "HOST", " none", LONG, "%s%n%x"],
    "cachespec": ["type=bogus", "type=registry", "type=registry,ref=", "type=registry,ref=a:b:c",
                  "type=registry,ref=127.0.0.1:9/x,mode=bogus", "", ",", "%s%n"],
    "bool": ["maybe", "2", "", "yes", "TRUE1"],
    "tag": ["UPPER", "a:b:c", "", ":", "a@sha256:zz", "-x", "a b", LONG],
    "string": ["", "%s%n%s%n", "=", LONG, "\xff\xfe".encode("latin-1").decode("utf-8", "surrogateescape")],
}

# kinds whose every value above is wrong (a usage error is required); a free
# string or an enum may be valid and fail later (or succeed: images --format '')
STRICT = {"bytes", "memory", "swap", "int", "cpus", "tail", "signal", "abspath", "volume", "tmpfs", "port", "uidmap",
          "bool", "tag", "cachespec"}

# command -> (prefix after the command, positional tail, [(flags, kind)], [boolean flags])
COMMANDS = {
    "run": (["--rm", "--network", "none"], [ABSENT_IMG, "true"], [
        (["-m", "--memory"], "memory"), (["--memory-swap"], "swap"), (["--cpus"], "cpus"),
        (["-c", "--cpu-shares"], "int"), (["--pids-limit"], "int"), (["-p", "--publish"], "port"),
        (["-v", "--volume"], "volume"), (["--tmpfs"], "tmpfs"), (["-w", "--workdir"], "abspath"),
        (["--uidmap"], "uidmap"), (["--network"], "enum"), (["--name"], "tag"), (["--security-opt"], "enum"),
        (["-e", "--env"], "string"), (["-u", "--user"], "string"), (["--entrypoint"], "string"),
        (["-h", "--hostname"], "string"), (["--cap-add"], "string"), (["--cap-drop"], "string"),
        (["--env-file"], "string"),
    ], ["--rm", "--detach", "--interactive", "--tty", "--privileged", "--read-only", "--init"]),
    "exec": ([], [CTR, "true"], [
        (["-w", "--workdir"], "abspath"), (["-e", "--env"], "string"), (["-u", "--user"], "string"),
    ], []),
    "build": (["-q"], [CTX], [
        (["-m", "--memory"], "memory"), (["--network"], "enum"), (["--progress"], "enum"),
        (["--compression"], "enum"), (["--platform"], "enum"), (["-t", "--tag"], "tag"),
        (["--cache-to"], "cachespec"), (["--cache-from"], "cachespec"), (["--secret"], "string"), (["-o", "--output"], "string"),
        (["-f", "--file"], "string"), (["--target"], "string"), (["--build-arg"], "string"), (["--label"], "string"),
        (["--iidfile"], "string"),
    ], ["--no-cache", "--pull"]),
    "stop": ([], [CTR], [(["-t", "--time"], "int"), (["-s", "--signal"], "signal")], []),
    "kill": ([], [CTR], [(["-s", "--signal"], "signal")], []),
    "logs": ([], [CTR], [(["-n", "--tail"], "tail")], []),
    "rm": ([], [CTR], [], ["--force"]),
    "ps": ([], [], [], ["--all", "--quiet"]),
    "images": ([], [], [(["--format"], "string")], ["--all", "--quiet", "--digests", "--no-trunc"]),
    "inspect": ([], [IMG], [(["-f", "--format"], "string"), (["--type"], "enum")], []),
    "tag": ([], [ABSENT_IMG, "fuzz:2"], [], []),
    "rmi": ([], [ABSENT_IMG], [], ["--force", "--no-prune"]),
    "history": ([], [IMG], [], ["--no-trunc", "--quiet", "--human"]),
    "image": (["prune"], [], [], ["--all", "--force"]),
    "import": ([], [os.path.join(WORK, "absent.tar"), "fuzz:3"], [
        (["-c", "--change"], "string"), (["--compression"], "enum"), (["-m", "--message"], "string"),
    ], []),
    "save": ([], [ABSENT_IMG], [(["-o", "--output"], "string"), (["--format"], "enum")], []),
    "load": ([], [], [(["-i", "--input"], "string")], ["--quiet"]),
    "fsck": ([], [], [], []),
    "pull": ([], [REG + "/fuzz/absent:1"], [(["--platform"], "enum"), (["--cert-dir"], "string"),
                                            (["--tls-verify"], "bool")], ["--quiet"]),
    "push": ([], [ABSENT_IMG, REG + "/fuzz/absent:1"], [(["--cert-dir"], "string"), (["--tls-verify"], "bool")],
             ["--quiet"]),
    "login": (["--password-stdin"], [REG], [(["-u", "--username"], "string")], []),
    "logout": ([], [REG], [], []),
    "builder": (["prune"], [], [], ["--all", "--force"]),
    "parse": ([], [], [(["-f", "--file"], "string"), (["--target"], "string"), (["--build-arg"], "string")],
              ["--json", "--check"]),
}
RUNLIKE = {"run", "exec"}
MULTI = {"stop", "kill", "rm", "inspect", "rmi"}    # commands taking several objects

# Valid lines to mutate (still naming only absent things).
VALID = [
    ["run", "--rm", "--network", "none", "-m", "64m", "--memory-swap", "128m", "--cpus", "0.5", "--cpu-shares",
     "512", "--pids-limit", "100", "-v", "/tmp:/data:ro", "--tmpfs", "/run:size=1m,mode=1777", "-w", "/srv", "-e",
     "A=1", "--name", "fuzzer", ABSENT_IMG, "true"],
    ["run", "-d", "--network", "none", "-p", "127.0.0.1:8080:80/udp", "--network=bridge", "--uidmap",
     "0:100000:65536", "-u", "1000:1000", ABSENT_IMG, "sh", "-c", "exit 3"],
    ["exec", "-i", "-w", "/", "-e", "A=1", "-u", "0", CTR, "true"],
    ["build", "-q", "-m", "64m", "--network", "none", "--progress", "plain", "--compression", "zstd", "-t",
     "fuzz:b", "--build-arg", "A=1", CTX],
    ["stop", "-t", "3", "-s", "TERM", CTR],
    ["kill", "-s", "SIGUSR1", CTR],
    ["logs", "--tail", "5", "-t", CTR],
    ["inspect", "--type", "image", "-f", "{{.Id}}", IMG],
    ["pull", "--tls-verify=false", "--platform", "linux/amd64", REG + "/fuzz/absent:1"],
    ["push", "--tls-verify=false", ABSENT_IMG, REG + "/fuzz/absent:1"],
    ["save", "-o", os.path.join(WORK, "out.tar"), ABSENT_IMG],
    ["import", "--change", "CMD [\"x\"]", os.path.join(WORK, "absent.tar"), "fuzz:3"],
]


PER_FLAG = 4   # bad values per flag: a window that moves along the list, so all are used


def table_vectors():
    out = []
    windows = {}
    for cmd, (prefix, tail, flags, bools) in COMMANDS.items():
        for names, kind in flags:
            vals = BAD[kind]
            at = windows.get(kind, 0)
            windows[kind] = at + PER_FLAG
            pick = [vals[(at + k) % len(vals)] for k in range(min(PER_FLAG, len(vals)))]
            for i, v in enumerate(pick):
                # alternate the spellings: -x V, --long V, --long=V
                name = names[i % len(names)]
                if name.startswith("--") and i % 3 == 2:
                    args = [name + "=" + v]
                else:
                    args = [name, v]
                out.append(("table" if kind in STRICT else "loose", cmd, [cmd] + prefix + args + tail))
            for name in names:   # the flag without its value
                out.append(("table", cmd, [cmd] + prefix + [name]))
        for b in bools:
            for v in BAD["bool"][:2]:
                out.append(("table", cmd, [cmd] + prefix + [b + "=" + v] + tail))
        for j, junk in enumerate(["--bogus", "-Z", "---", "--=x", "--" + LONG]):
            if j < 2 or (len(cmd) + j) % 3 == 0:
                out.append(("table", cmd, [cmd] + prefix + [junk] + tail))
    # global options
    for g in [["--root"], ["--storage-driver"], ["--bogus"], ["--root=", "frobnicate"], ["-Z", "ps"]]:
        out.append(("global", "", g))
    return out


def mutate(rng, line):
    cmd = line[0]
    prefix, tail, flags, bools = COMMANDS[cmd]
    # positionals (the tail) are never touched: they keep naming absent things
    ntail = len(line) - line.index(ABSENT_IMG) if cmd == "run" else len(tail)
    body, end = line[1:len(line) - ntail], line[len(line) - ntail:]
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(7)
        if op == 0 and body:                     # a value (or flag) becomes a bad value
            i = rng.randrange(len(body))
            body[i] = rng.choice(BAD[rng.choice(list(BAD))])
        elif op == 1 and body:                   # drop a token
            del body[rng.randrange(len(body))]
        elif op == 2 and body:                   # double a token
            i = rng.randrange(len(body))
            body.insert(i, body[i])
        elif op == 3 and flags:                  # insert a flag with a bad value of its kind
            names, kind = rng.choice(flags)
            body.insert(rng.randrange(len(body) + 1), rng.choice(names))
            body.insert(rng.randrange(len(body) + 1), rng.choice(BAD[kind]))
        elif op == 4 and body:                   # cut a token
            i = rng.randrange(len(body))
            body[i] = body[i][:rng.randrange(len(body[i]) + 1)]
        elif op == 5 and len(body) > 1:          # join a flag and the next token with '='
            i = rng.randrange(len(body) - 1)
            body[i:i + 2] = [body[i] + "=" + body[i + 1]]
        elif op == 6 and body:                   # a stray character
            i = rng.randrange(len(body))
            body[i] = body[i] + rng.choice(["\x01", "=", ":", ",", "%", "-", " ", "\u00e9", "9"])
    # the run image must stay absent and no rootfs may appear
    v = [cmd] + body + end
    if any(t.startswith("--rootfs") for t in v):
        return None
    return v


def mutated_vectors(rng, n):
    out = []
    while len(out) < n:
        base = rng.choice(VALID)
        v = mutate(rng, list(base))
        if v is not None:
            out.append(("mutation", v[0], v))
    return out


SAN_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:", "UndefinedBehaviorSanitizer",
             "SUMMARY: ", "AddressSanitizer:DEADLYSIGNAL")


def wants_help(argv):
    for a in argv[1:]:
        if a == "--":
            return False
        if a in ("-h", "--help"):
            return True
    return False


def check(source, cmd, argv, rc, err):
    text = err.decode("utf-8", "replace")
    for m in SAN_MARKS:
        if m in text:
            return "sanitizer report"
    if rc < 0:
        return "killed by signal %d" % -rc
    if rc == 124 or rc == 137:
        return "timed out"
    if rc == 0:
        if (wants_help(argv) or source in ("loose", "mutation")) and not text:
            return None
        return "exit 0 for a bad command line"
    lines = text.splitlines()
    if rc == 1 and cmd in MULTI and lines and all(l.startswith("kiln: ") for l in lines):
        lines = lines[:1]     # one error per object named (docker stop a b says two)
    if len(lines) != 1 or not lines[0].startswith("kiln: "):
        return "stderr is not one 'kiln: ' line (%d lines)" % len(lines)
    if cmd == "run":
        ok = {125}
    elif cmd == "exec":
        ok = {125} if source == "table" else {125, 1}
    elif source == "table" or source == "global":
        ok = {2}
    else:
        ok = {1, 2}
    if rc not in ok:
        return "exit %d, want %s" % (rc, "/".join(str(x) for x in sorted(ok)))
    return None


def main():
    rng = random.Random(SEED)
    vectors = table_vectors()
    vectors += mutated_vectors(rng, 120)
    env = dict(os.environ)
    env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0:exitcode=86:print_summary=1"
    env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1:exitcode=87"
    env.pop("KILN_DEBUG", None)
    only = os.environ.get("KILN_CLI_FUZZ_ONLY", "").split()
    if only:
        vectors = [v for v in vectors if v[1] in only]

    def one(vec):
        source, cmd, argv = vec
        try:
            p = subprocess.run(["timeout", "-k", "5", "60", KILN] + argv, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=WORK, timeout=90)
            rc, err = p.returncode, p.stderr
        except subprocess.TimeoutExpired:
            rc, err = 124, b""
        return check(source, cmd, argv, rc, err), rc, err

    start = time.monotonic()
    failures = []
    per_cmd = {}
    kinds = {}
    # a few at a time: the commands are independent (the store changes only
    # through absent names), and a loaded machine gives each process its share
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        for (source, cmd, argv), (why, rc, err) in zip(vectors, pool.map(one, vectors)):
            per_cmd[cmd or "(global)"] = per_cmd.get(cmd or "(global)", 0) + 1
            if why:
                failures.append((why, argv, rc, err.decode("utf-8", "replace")))
                kinds[(cmd, why)] = kinds.get((cmd, why), 0) + 1
    took = time.monotonic() - start
    for (cmd, why), n in sorted(kinds.items()):
        print("  %-8s %-50s x%d" % (cmd, why, n))
    shown_kinds = {}
    for why, argv, rc, err in failures:
        # a few examples of each kind of failure
        k = (argv[0], why)
        shown_kinds[k] = shown_kinds.get(k, 0) + 1
        if shown_kinds[k] > 2:
            continue
        shown = " ".join(repr(a) if (not a or " " in a or len(a) > 60) else a for a in argv)
        if len(shown) > 300:
            shown = shown[:300] + "..."
        print("FAIL: %s: kiln %s (exit %d)" % (why, shown, rc))
        for line in err.splitlines()[:12]:
            print("    | " + line[:200])
    print("cli fuzz: %d vectors (%d table, %d mutations; seed %d) over %d commands, %d failures, %.1f s" % (
        len(vectors), sum(1 for v in vectors if v[0] != "mutation"), sum(1 for v in vectors if v[0] == "mutation"),
        SEED, len(per_cmd), len(failures), took))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
