# The C API test scenarios, one CTest test each (shared by tests/c and the top-level build).
set(BOXLITE_C_SCENARIOS example stream errors free_order threads cancel images reopen sized execution logging pull network copy)
