package boxlite

// The cgo boundary: the header, the library, and the C helpers the Go code calls. Build
// flags come from pkg-config (an installed prefix's boxlite.pc, or the one
// scripts/test-go.sh writes for a source tree); CGO_CFLAGS/CGO_LDFLAGS add to them.

/*
#cgo pkg-config: boxlite
#include <stdlib.h>
#include "helpers.h"
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// HeaderVersion is the version of include/boxlite.h this package was compiled against.
const HeaderVersion = C.BOXLITE_VERSION_MAJOR*1000000 + C.BOXLITE_VERSION_MINOR*1000 + C.BOXLITE_VERSION_PATCH

// HeaderVersionString is HeaderVersion as "MAJOR.MINOR.PATCH".
var HeaderVersionString = fmt.Sprintf("%d.%d.%d", C.BOXLITE_VERSION_MAJOR, C.BOXLITE_VERSION_MINOR, C.BOXLITE_VERSION_PATCH)

// Version is the loaded library's version ("0.2.0").
func Version() string { return C.GoString(C.boxlite_version()) }

// VersionNumber is the loaded library's version as MAJOR*1000000 + MINOR*1000 + PATCH.
func VersionNumber() uint32 { return uint32(C.boxlite_version_number()) }

// cstr converts s for one call; the caller frees it with free.
func cstr(s string) *C.char { return C.CString(s) }

func free(p *C.char) { C.free(unsafe.Pointer(p)) }

// optCstr is NULL for "".
func optCstr(s string) *C.char {
	if s == "" {
		return nil
	}
	return C.CString(s)
}
