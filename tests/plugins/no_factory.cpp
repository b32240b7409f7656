// A valid shared library that is not an nnpar plugin: no nnpar_* symbols.
extern "C" __attribute__((visibility("default"))) int some_other_function() { return 42; }
