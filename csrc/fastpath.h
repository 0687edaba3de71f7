// Python functions of tempattn._C for the operators' per-call checks (fastpath.cpp).
#pragma once
#include <Python.h>

// eager_mode()'s results; tempattn/ops/common/fastpath.py mirrors them.
enum EagerMode : long { kEagerNoGrad = 0, kEagerGrad = 1, kTrace = 2 };

// The module's method table, terminated by a null entry.
PyMethodDef* tempattn_fastpath_methods();
