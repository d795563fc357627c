package boxlite

// The library calls these on its own threads (one at a time per execution). user_data is
// a runtime/cgo.Handle of an *execState, deleted exactly once by boxliteGoUserDataFree.

// #include <boxlite.h>
import "C"

import (
	"runtime/cgo"
	"sync/atomic"
	"unsafe"
)

// liveCallbacks counts handles handed to the library and not yet given back through
// user_data_free (the tests check that it returns to zero).
var liveCallbacks atomic.Int64

func stateOf(userData unsafe.Pointer) *execState {
	return cgo.Handle(uintptr(userData)).Value().(*execState)
}

//export boxliteGoOnStdout
func boxliteGoOnStdout(data *C.uint8_t, n C.size_t, userData unsafe.Pointer) C.int32_t {
	return stateOf(userData).output(false, unsafe.Slice((*byte)(unsafe.Pointer(data)), int(n)))
}

//export boxliteGoOnStderr
func boxliteGoOnStderr(data *C.uint8_t, n C.size_t, userData unsafe.Pointer) C.int32_t {
	return stateOf(userData).output(true, unsafe.Slice((*byte)(unsafe.Pointer(data)), int(n)))
}

//export boxliteGoOnExit
func boxliteGoOnExit(status *C.boxlite_exit_status_t, err *C.boxlite_error_t, userData unsafe.Pointer) {
	var s *ExitStatus
	if status != nil {
		x := exitStatus(status)
		s = &x
	}
	var e error
	if err != nil {
		e = copyError(err)
	}
	stateOf(userData).exited(s, e)
}

//export boxliteGoUserDataFree
func boxliteGoUserDataFree(userData unsafe.Pointer) {
	cgo.Handle(uintptr(userData)).Delete()
	liveCallbacks.Add(-1)
}

func exitStatus(s *C.boxlite_exit_status_t) ExitStatus {
	return ExitStatus{ExitCode: int(s.exit_code), Signal: int(s.signal), TimedOut: bool(s.timed_out), Cancelled: bool(s.cancelled)}
}
