"""Static check that tempattn._C runs no instruction above the x86-64 baseline before its ISA check.

``python tests/packaging/isa_audit.py [PATH.so]`` (default: the imported ``tempattn._C``). The CPU
kernels are compiled once per ISA level into the namespaces ``tempattn::cpu::AVX2`` / ``AVX512``
(with ``at::vec::AVX2`` / ``AVX512`` inside them); the dispatcher (csrc/cpu/dispatch.cpp, baseline)
reaches them only through its kernel tables after checking the CPU. So an instruction above the
baseline (SSE2) -- AVX, AVX2, FMA, F16C, AVX-512, a ymm / zmm / mask register, SSE3 to SSE4.2, BMI,
POPCNT, LZCNT, MOVBE -- may appear only in code of those namespaces, or in helpers that only such
code reaches. From the disassembly (objdump) and the relocations (readelf) the audit finds the
functions that may run before the check: every function outside the level namespaces that is
exported, has its address stored in data (static initialisers in .init_array, vtables, tables of
function pointers) or is called or referenced from another such function. Any of those holding an
instruction above the baseline is reported; exit status 1 if there is one.
"""
import re
import shutil
import subprocess
import sys
from bisect import bisect_right
from collections import defaultdict
from typing import NamedTuple

# An ISA level's namespace in a mangled name: the source names 4AVX2 / 6AVX512 (not part of a longer
# length prefix, so e.g. 14AVX2xxxxxxxxxx does not count).
LEVEL = re.compile(r"(?<![0-9])(4AVX2|6AVX512)")

_VMX = {"verr", "verw", "vmcall", "vmlaunch", "vmresume", "vmxoff", "vmxon", "vmread", "vmwrite", "vmptrld",
        "vmptrst", "vmclear", "vmfunc", "vmrun", "vmload", "vmsave", "vmmcall", "vmgexit"}
# Legacy-encoded (non-VEX) instructions above SSE2. tzcnt is left out: GCC emits `rep bsf` for
# generic x86-64 (it runs as bsf on older CPUs), which objdump shows as tzcnt.
_ABOVE_SSE2 = set("""
addsubpd addsubps haddpd haddps hsubpd hsubps lddqu movddup movshdup movsldup fisttp fisttps fisttpl fisttpll
pabsb pabsw pabsd palignr phaddw phaddd phaddsw phsubw phsubd phsubsw pmaddubsw pmulhrsw pshufb psignb psignw psignd
blendpd blendps blendvpd blendvps dppd dpps extractps insertps movntdqa mpsadbw packusdw pblendvb pblendw pcmpeqq
pextrb pextrd pextrq phminposuw pinsrb pinsrd pinsrq pmaxsb pmaxsd pmaxud pmaxuw pminsb pminsd pminud pminuw
pmovsxbw pmovsxbd pmovsxbq pmovsxwd pmovsxwq pmovsxdq pmovzxbw pmovzxbd pmovzxbq pmovzxwd pmovzxwq pmovzxdq
pmuldq pmulld ptest roundpd roundps roundsd roundss crc32 crc32b crc32w crc32l crc32q pcmpestri pcmpestrm
pcmpistri pcmpistrm pcmpgtq popcnt lzcnt movbe andn bextr blsi blsmsk blsr bzhi mulx pdep pext rorx sarx shlx shrx
""".split())
_PREFIXES = {"rep", "repz", "repe", "repnz", "repne", "lock", "notrack", "bnd", "data16", "addr32", "cs", "ds",
             "es", "ss", "fs", "gs"}
_WIDE_REGISTER = re.compile(r"%(ymm|zmm)\d+|%k[0-7]\b")
_FUNCTION = re.compile(r"^([0-9a-f]+) <(.+)>:$")
_INSTRUCTION = re.compile(r"^\s*([0-9a-f]+):\t(.*)$")
_REFERENCE = re.compile(r"\b([0-9a-f]+) <[^<>]+>")


def above_baseline(instruction: str) -> bool:
    """Whether one disassembled instruction (AT&T syntax, no bytes) needs more than x86-64 SSE2."""
    words = instruction.split("#", 1)[0].split()
    while words and words[0] in _PREFIXES:
        words = words[1:]
    if not words:
        return False
    mnemonic = words[0]
    if mnemonic.startswith("v") and mnemonic not in _VMX:
        return True
    if mnemonic.startswith("k") and mnemonic[1:4] in ("mov", "and", "or", "xor", "not", "shi", "tes", "unp", "add"):
        return True
    return mnemonic in _ABOVE_SSE2 or bool(_WIDE_REGISTER.search(instruction))


def in_level(symbol: str) -> bool:
    return LEVEL.search(symbol) is not None


def _run(*command) -> str:
    tool = shutil.which(command[0])
    if tool is None:
        raise RuntimeError(f"{command[0]} (binutils) is needed for the ISA audit")
    return subprocess.run([tool, *command[1:]], check=True, capture_output=True, text=True).stdout


def disassemble(path: str):
    """Functions by start address: ({address: name}, {address: first instructions above the baseline},
    {address: addresses it calls, jumps to or takes}); PLT stubs stand for the function they bind to."""
    names, wide, refs = {}, defaultdict(list), defaultdict(set)
    function = None
    for line in _run("objdump", "-d", "--no-show-raw-insn", "-M", "att", path).splitlines():
        header = _FUNCTION.match(line)
        if header:
            function = int(header.group(1), 16)
            names[function] = header.group(2)
            continue
        body = _INSTRUCTION.match(line)
        if function is None or body is None:
            continue
        instruction = body.group(2).strip()
        if above_baseline(instruction) and len(wide[function]) < 3:
            wide[function].append(instruction)
        refs[function].update(int(address, 16) for address in _REFERENCE.findall(instruction))
    return names, dict(wide), refs


class _Functions:
    """Maps an address to the function holding it, and a PLT stub to the exported function it calls."""

    def __init__(self, names, exported, code_sections):
        self.names = names
        self.starts = sorted(names)
        self.exported = exported  # name -> address
        self.code_sections = code_sections  # [(start, end)] of the executable sections

    def at(self, address):
        i = bisect_right(self.starts, address) - 1
        if i < 0 or not any(lo <= address < hi for lo, hi in self.code_sections):
            return None
        start = self.starts[i]
        name = self.names[start]
        if name.endswith("@plt"):
            return self.exported.get(name[:-4])
        return start


def _code_sections(path: str):
    sections = []
    for line in _run("readelf", "-SW", path).splitlines():
        match = re.match(r"\s*\[\s*\d+\]\s+(\S+)\s+\S+\s+([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+\S+\s+(\S+)", line)
        if match and "X" in match.group(4):
            start, size = int(match.group(2), 16), int(match.group(3), 16)
            sections.append((start, start + size))
    return sections


def _exported(path: str):
    exported = {}
    for line in _run("nm", "-D", "--defined-only", path).splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[1] in "TtWiu":
            exported[fields[2].split("@")[0]] = int(fields[0], 16)
    return exported


def data_roots(path: str, functions: "_Functions") -> set:
    """Functions whose address is stored in data (relative and symbolic relocations), and exported ones."""
    roots = {functions.at(address) for address in functions.exported.values()}
    for line in _run("readelf", "-rW", path).splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[2] == "R_X86_64_RELATIVE":
            roots.add(functions.at(int(fields[3], 16)))
        elif len(fields) >= 5 and fields[2] in ("R_X86_64_64", "R_X86_64_GLOB_DAT", "R_X86_64_JUMP_SLOT"):
            value = int(fields[3], 16)
            if value:
                roots.add(functions.at(value))
    roots.discard(None)
    return roots


class Audit(NamedTuple):
    offenders: dict  # "name @ address" -> its first instructions above the baseline
    before_check: int  # functions that may run before the ISA check
    in_levels: dict  # level -> functions in its namespaces


def audit(path: str) -> Audit:
    """The functions that may run before the ISA check and hold instructions above the baseline."""
    names, wide, refs = disassemble(path)
    functions = _Functions(names, _exported(path), _code_sections(path))
    # May run before the check: roots outside the levels, then whatever non-level code they reference.
    reached = {f for f in data_roots(path, functions) if not in_level(names[f])}
    frontier = list(reached)
    while frontier:
        for address in refs.get(frontier.pop(), ()):
            target = functions.at(address)
            if target is not None and not in_level(names[target]) and target not in reached:
                reached.add(target)
                frontier.append(target)
    offenders = {f"{names[f]} @ {f:#x}": wide[f] for f in sorted(reached) if f in wide}
    in_levels = {level: sum(f"{len(level)}{level}" in name for name in names.values()) for level in ("AVX2", "AVX512")}
    return Audit(offenders, len(reached), in_levels)


def demangle(names):
    try:
        out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True).stdout
        return out.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return list(names)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv:
        path = argv[0]
    else:
        import tempattn._C
        path = tempattn._C.__file__
    result = audit(path)
    offenders = result.offenders
    print(f"{path}: functions in the level namespaces {result.in_levels}")
    for name, pretty in zip(offenders, demangle([n.split(" @ ")[0] for n in offenders])):
        print(f"may run before the ISA check, above the baseline: {pretty[:300]}\n    " + "\n    ".join(offenders[name]))
    print(f"{len(offenders)} of the {result.before_check} functions that may run before the ISA check hold instructions "
          "above x86-64 SSE2")
    return 1 if offenders else 0


if __name__ == "__main__":
    sys.exit(main())
