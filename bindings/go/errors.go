package boxlite

// #include <boxlite.h>
import "C"

import (
	"errors"
	"fmt"
)

// Code is one of the library's stable error codes (BOXLITE_ERROR_*).
type Code int32

// The codes of include/boxlite.h.
const (
	CodeInvalidArgument    Code = C.BOXLITE_ERROR_INVALID_ARGUMENT
	CodeNotFound           Code = C.BOXLITE_ERROR_NOT_FOUND
	CodeInvalidState       Code = C.BOXLITE_ERROR_INVALID_STATE
	CodeEngineUnavailable  Code = C.BOXLITE_ERROR_ENGINE_UNAVAILABLE
	CodeHelperNotFound     Code = C.BOXLITE_ERROR_HELPER_NOT_FOUND
	CodeBootFailed         Code = C.BOXLITE_ERROR_BOOT_FAILED
	CodeVMExited           Code = C.BOXLITE_ERROR_VM_EXITED
	CodeAgent              Code = C.BOXLITE_ERROR_AGENT
	CodeProgramNotFound    Code = C.BOXLITE_ERROR_PROGRAM_NOT_FOUND
	CodeNotExecutable      Code = C.BOXLITE_ERROR_NOT_EXECUTABLE
	CodeWorkingDirNotFound Code = C.BOXLITE_ERROR_WORKING_DIR_NOT_FOUND
	CodeUserNotFound       Code = C.BOXLITE_ERROR_USER_NOT_FOUND
	CodeExecFailed         Code = C.BOXLITE_ERROR_EXEC_FAILED
	CodeHomeLocked         Code = C.BOXLITE_ERROR_HOME_LOCKED
	CodeIO                 Code = C.BOXLITE_ERROR_IO
	CodeImage              Code = C.BOXLITE_ERROR_IMAGE
	CodeUnauthorized       Code = C.BOXLITE_ERROR_UNAUTHORIZED
	CodePull               Code = C.BOXLITE_ERROR_PULL
	CodeCancelled          Code = C.BOXLITE_ERROR_CANCELLED
	CodeStillRunning       Code = C.BOXLITE_ERROR_STILL_RUNNING
	CodeInternal           Code = C.BOXLITE_ERROR_INTERNAL
)

var codeNames = map[Code]string{
	CodeInvalidArgument: "invalid argument", CodeNotFound: "not found", CodeInvalidState: "invalid state",
	CodeEngineUnavailable: "engine unavailable", CodeHelperNotFound: "helper not found",
	CodeBootFailed: "boot failed", CodeVMExited: "VM exited", CodeAgent: "agent error",
	CodeProgramNotFound: "program not found", CodeNotExecutable: "not executable",
	CodeWorkingDirNotFound: "working directory not found", CodeUserNotFound: "user not found",
	CodeExecFailed: "exec failed", CodeHomeLocked: "home locked", CodeIO: "I/O error",
	CodeImage: "image error", CodeUnauthorized: "unauthorized", CodePull: "pull failed",
	CodeCancelled: "cancelled", CodeStillRunning: "still running", CodeInternal: "internal error",
}

func (c Code) String() string {
	if s, ok := codeNames[c]; ok {
		return s
	}
	return fmt.Sprintf("error code %d", int32(c))
}

// Error is an error of the library: its code and its message (which names the cause and,
// where there is one, the fix). Match a kind with errors.Is(err, boxlite.ErrNotFound), or
// take it apart with errors.As(err, &e) where e is a *boxlite.Error.
type Error struct {
	Code    Code
	Message string
}

func (e *Error) Error() string {
	if e.Message == "" {
		return "boxlite: " + e.Code.String()
	}
	return "boxlite: " + e.Message
}

// Is makes every *Error match the sentinel of its code (ErrNotFound, ...).
func (e *Error) Is(target error) bool {
	var t *Error
	if !errors.As(target, &t) {
		return false
	}
	return t.Message == "" && t.Code == e.Code
}

// One sentinel per code: errors.Is(err, boxlite.ErrHomeLocked).
var (
	ErrInvalidArgument    = &Error{Code: CodeInvalidArgument}
	ErrNotFound           = &Error{Code: CodeNotFound}
	ErrInvalidState       = &Error{Code: CodeInvalidState}
	ErrEngineUnavailable  = &Error{Code: CodeEngineUnavailable}
	ErrHelperNotFound     = &Error{Code: CodeHelperNotFound}
	ErrBootFailed         = &Error{Code: CodeBootFailed}
	ErrVMExited           = &Error{Code: CodeVMExited}
	ErrAgent              = &Error{Code: CodeAgent}
	ErrProgramNotFound    = &Error{Code: CodeProgramNotFound}
	ErrNotExecutable      = &Error{Code: CodeNotExecutable}
	ErrWorkingDirNotFound = &Error{Code: CodeWorkingDirNotFound}
	ErrUserNotFound       = &Error{Code: CodeUserNotFound}
	ErrExecFailed         = &Error{Code: CodeExecFailed}
	ErrHomeLocked         = &Error{Code: CodeHomeLocked}
	ErrIO                 = &Error{Code: CodeIO}
	ErrImage              = &Error{Code: CodeImage}
	ErrUnauthorized       = &Error{Code: CodeUnauthorized}
	ErrPull               = &Error{Code: CodePull}
	ErrCancelled          = &Error{Code: CodeCancelled}
	ErrStillRunning       = &Error{Code: CodeStillRunning}
	ErrInternal           = &Error{Code: CodeInternal}
)

// ErrTimedOut matches an *ExitError whose command's Timeout passed (its process group was
// killed; the output written so far is kept in Stdout/Stderr).
var ErrTimedOut = errors.New("boxlite: command timed out")

// takeError turns an owned boxlite_error_t into an *Error and frees it; nil for NULL.
func takeError(e *C.boxlite_error_t) error {
	if e == nil {
		return nil
	}
	defer C.boxlite_error_free(e)
	return copyError(e)
}

// copyError reads a borrowed boxlite_error_t.
func copyError(e *C.boxlite_error_t) *Error {
	return &Error{Code: Code(C.boxlite_error_code(e)), Message: C.GoString(C.boxlite_error_message(e))}
}

func closedError(what string) error {
	return &Error{Code: CodeInvalidState, Message: what + " is closed"}
}
