// Included first by every header and source of the CPU kernels (csrc/cpu/kernels/, the headers
// here except block_cache.h). setup.py compiles each csrc/cpu/kernels/*.cpp once per ISA level
// with -DCPU_CAPABILITY=DEFAULT|AVX2|AVX512 (+ -DCPU_CAPABILITY_AVX2 / _AVX512 and the level's
// -m flags), as ATen does, and all kernel code lives in tempattn::cpu::CPU_CAPABILITY: the copies
// of the levels never share a symbol, so the linker cannot hand one level's caller another level's
// code. at::vec::Vectorized lives in at::vec::CPU_CAPABILITY likewise. csrc/cpu/dispatch.cpp picks
// the level at first use.
#pragma once

#if !defined(CPU_CAPABILITY)
#error "CPU kernel code is compiled once per ISA level with -DCPU_CAPABILITY=DEFAULT|AVX2|AVX512 (see setup.py)"
#endif
