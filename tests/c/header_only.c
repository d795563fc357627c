/* The header compiles on its own (C99 and C++, -Wall -Wextra -Werror). */
#include <boxlite.h>
int boxlite_header_compiles(void);
int boxlite_header_compiles(void) { return BOXLITE_VERSION_MAJOR + (int)sizeof(boxlite_exit_status_t); }
