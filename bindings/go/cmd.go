package boxlite

// #include "helpers.h"
import "C"

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"runtime/cgo"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// ExitStatus says how a process ended.
type ExitStatus struct {
	ExitCode  int  // -1 if a signal ended it
	Signal    int  // the signal that ended it, or 0
	TimedOut  bool // its Timeout passed and its process group was killed
	Cancelled bool // an output writer failed and its process group was killed
}

// Success reports exit code 0 without a timeout or cancellation.
func (s ExitStatus) Success() bool {
	return s.ExitCode == 0 && s.Signal == 0 && !s.TimedOut && !s.Cancelled
}

func (s ExitStatus) String() string {
	var m string
	if s.Signal != 0 {
		m = "signal: " + syscall.Signal(s.Signal).String()
	} else {
		m = fmt.Sprintf("exit status %d", s.ExitCode)
	}
	if s.TimedOut {
		m += " (timed out)"
	}
	if s.Cancelled {
		m += " (cancelled)"
	}
	return m
}

// ExitError is the error of Run, Wait and Output for a command that ran and did not
// succeed. errors.Is(err, ErrTimedOut) holds when its Timeout passed; the output written
// until then is in Stdout/Stderr (Output returns it with this error).
type ExitError struct {
	ExitStatus
	// Stderr holds (the end of) the standard error if Output collected it.
	Stderr []byte
}

func (e *ExitError) Error() string { return e.ExitStatus.String() }

// Is matches ErrTimedOut for a command whose Timeout passed.
func (e *ExitError) Is(target error) bool { return target == ErrTimedOut && e.TimedOut }

// execState is what the library's callbacks reach (through a cgo.Handle).
type execState struct {
	mu       sync.Mutex
	stdout   io.Writer
	stderr   io.Writer
	writeErr error
	status   *ExitStatus
	err      error
	done     chan struct{} // closed by on_exit
}

func (s *execState) output(isStderr bool, p []byte) C.int32_t {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.stdout
	if isStderr {
		w = s.stderr
	}
	if w == nil {
		return 0
	}
	if s.writeErr != nil {
		return 1
	}
	if _, err := w.Write(p); err != nil {
		s.writeErr = err
		return 1 // the library kills the process group
	}
	return 0
}

func (s *execState) exited(status *ExitStatus, err error) {
	s.mu.Lock()
	s.status, s.err = status, err
	s.mu.Unlock()
	close(s.done)
}

// Cmd is a command to run in a box, shaped like os/exec.Cmd: set its fields, then Run,
// Output or Start and Wait. A Cmd cannot be reused. Close frees a started command that
// was never waited for (Wait frees it; a finalizer is the safety net).
type Cmd struct {
	Path string   // the program (looked up in the box's PATH)
	Args []string // Args[0] is the program's name, as in os/exec
	Env  []string // "NAME=value" added to the box's environment
	Dir  string   // the working directory ("" : the box's default)
	User string   // a user name or uid ("" : the box's default)
	// Timeout, when non-zero, kills the process group after it (ExitStatus.TimedOut;
	// ErrTimedOut); the output until then is kept.
	Timeout time.Duration

	// Stdin, if non-nil, is copied to the process (then its stdin is closed); if nil, and
	// no StdinPipe was taken, the process reads end of file, and Start returns only once
	// the process has finished or after ~250 ms (a quick process costs one round trip).
	Stdin io.Reader
	// Stdout and Stderr receive the output on the library's threads, one chunk at a time,
	// in order, never at the same time; nil drops it. A write error kills the process
	// (ExitStatus.Cancelled) and is Wait's result.
	Stdout io.Writer
	Stderr io.Writer

	// ProcessState is how the process ended, once Wait returned.
	ProcessState *ExitStatus

	box       *Box
	ex        *execution
	stdinPipe *stdinPipe
	stderrBuf *bytes.Buffer
}

// execution is a started command: the library's handle and the callbacks' state. The
// goroutines of a command (context watcher, stdin copier) hold it, not the Cmd, so that a
// dropped Cmd can be finalized.
type execution struct {
	h      handle[*C.boxlite_execution_t]
	st     *execState
	id     string
	ctxErr atomic.Pointer[error] // set when a context killed it

	mu       sync.Mutex
	finished bool
	status   ExitStatus
	err      error
}

// Command makes a Cmd that runs name with args in the box.
func (b *Box) Command(name string, args ...string) *Cmd {
	return &Cmd{Path: name, Args: append([]string{name}, args...), box: b}
}

func (c *Cmd) String() string { return strings.Join(c.Args, " ") }

// ID is the execution's id in the box ("" before Start).
func (c *Cmd) ID() string {
	if c.ex == nil {
		return ""
	}
	return c.ex.id
}

// Pid is the process's id inside the box (the guest's word).
func (c *Cmd) Pid() (int, error) {
	if c.ex == nil {
		return 0, errors.New("boxlite: not started")
	}
	var pid C.uint32_t
	err := c.ex.h.use(func(p *C.boxlite_execution_t) error { return takeError(C.boxlite_execution_pid(&pid, p)) })
	return int(pid), err
}

func (c *Cmd) command() (*C.boxlite_command_t, error) {
	var p *C.boxlite_command_t
	name := cstr(c.Path)
	err := takeError(C.boxlite_command_new(&p, name))
	free(name)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*C.boxlite_command_t, error) {
		C.boxlite_command_free(p)
		return nil, err
	}
	if len(c.Args) > 1 {
		for _, a := range c.Args[1:] {
			s := cstr(a)
			err := takeError(C.boxlite_command_add_arg(p, s))
			free(s)
			if err != nil {
				return fail(err)
			}
		}
	}
	for _, kv := range c.Env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return fail(&Error{Code: CodeInvalidArgument, Message: fmt.Sprintf("environment entry %q is not NAME=value", kv)})
		}
		ks, vs := cstr(k), cstr(v)
		err := takeError(C.boxlite_command_set_env(p, ks, vs))
		free(ks)
		free(vs)
		if err != nil {
			return fail(err)
		}
	}
	if c.Dir != "" {
		s := cstr(c.Dir)
		err := takeError(C.boxlite_command_set_working_dir(p, s))
		free(s)
		if err != nil {
			return fail(err)
		}
	}
	if c.User != "" {
		s := cstr(c.User)
		err := takeError(C.boxlite_command_set_user(p, s))
		free(s)
		if err != nil {
			return fail(err)
		}
	}
	if c.Timeout > 0 {
		ms := (c.Timeout + time.Millisecond - 1) / time.Millisecond
		if err := takeError(C.boxlite_command_set_timeout_ms(p, C.uint64_t(ms))); err != nil {
			return fail(err)
		}
	}
	if c.Stdin == nil && c.stdinPipe == nil {
		if err := takeError(C.boxlite_command_set_no_stdin(p)); err != nil {
			return fail(err)
		}
	}
	return p, nil
}

// Start starts the command (booting the box first if it is not running) and returns at
// once (with no Stdin and no StdinPipe: once it has finished, or after ~250 ms). ctx bounds the execution as exec.CommandContext does: once ctx is done the process
// group is killed and Wait returns ctx's error. A boot cannot be interrupted: if ctx ends
// during it, Start returns ctx's error at once and the process is killed when it started.
func (c *Cmd) Start(ctx context.Context) error {
	if c.ex != nil {
		return errors.New("boxlite: already started")
	}
	if c.box == nil {
		return errors.New("boxlite: Cmd not made by Box.Command")
	}
	cmd, err := c.command()
	if err != nil {
		return err
	}
	st := &execState{stdout: c.Stdout, stderr: c.Stderr, done: make(chan struct{})}
	ex := &execution{st: st, h: handle[*C.boxlite_execution_t]{what: "execution"}}
	h := cgo.NewHandle(st)
	liveCallbacks.Add(1)

	var mu sync.Mutex
	abandoned := false
	var claim atomic.Int32 // who frees cmd and h: the call, or this function if it never ran
	err = c.box.h.useCtx(ctx, func(p *C.boxlite_box_t) error {
		if !claim.CompareAndSwap(0, 1) {
			return nil
		}
		defer C.boxlite_command_free(cmd)
		var out *C.boxlite_execution_t
		// user_data_free deletes h, exactly once, whatever the result.
		if err := takeError(C.bx_box_exec(&out, p, cmd, C.uintptr_t(h))); err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		if abandoned {
			C.boxlite_execution_kill(out)
			C.boxlite_execution_free(out)
			return nil
		}
		ex.h.p = out
		ex.id = C.GoString(C.boxlite_execution_id(out))
		return nil
	})
	if claim.CompareAndSwap(0, 2) { // never handed to the library
		C.boxlite_command_free(cmd)
		h.Delete()
		liveCallbacks.Add(-1)
	}
	mu.Lock()
	defer mu.Unlock()
	if err == nil && ex.h.p == nil {
		err = closedError("box")
	}
	if err != nil {
		abandoned = true
		if ex.h.p != nil {
			C.boxlite_execution_kill(ex.h.p)
			C.boxlite_execution_free(ex.h.p)
			ex.h.p = nil
		}
		return err
	}
	c.ex = ex
	runtime.SetFinalizer(c, (*Cmd).Close)

	if done := ctx.Done(); done != nil {
		go func() {
			select {
			case <-done:
				select {
				case <-st.done: // over already
					return
				default:
				}
				e := ctx.Err()
				ex.ctxErr.Store(&e)
				_ = ex.kill()
			case <-st.done:
			}
		}()
	}
	switch {
	case c.Stdin != nil:
		go ex.copyStdin(c.Stdin)
	case c.stdinPipe != nil:
		c.stdinPipe.ex.Store(ex)
	} // else the process started with no stdin (boxlite_command_set_no_stdin)
	return nil
}

func (ex *execution) copyStdin(r io.Reader) {
	buf := make([]byte, 64*1024)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if ex.writeStdin(buf[:n]) != nil {
				return
			}
		}
		if err != nil {
			break
		}
	}
	_ = ex.closeStdin()
}

func (ex *execution) writeStdin(p []byte) error {
	if len(p) == 0 {
		return nil
	}
	return ex.h.use(func(e *C.boxlite_execution_t) error {
		return takeError(C.boxlite_execution_write_stdin(e, (*C.uint8_t)(unsafe.Pointer(&p[0])), C.size_t(len(p))))
	})
}

func (ex *execution) closeStdin() error {
	return ex.h.use(func(e *C.boxlite_execution_t) error { return takeError(C.boxlite_execution_close_stdin(e)) })
}

func (ex *execution) kill() error {
	return ex.h.use(func(e *C.boxlite_execution_t) error { return takeError(C.boxlite_execution_kill(e)) })
}

// stdinPipe writes straight to the process's stdin (each Write blocks until the box took
// the bytes).
type stdinPipe struct {
	ex atomic.Pointer[execution]
}

func (s *stdinPipe) Write(p []byte) (int, error) {
	ex := s.ex.Load()
	if ex == nil {
		return 0, errors.New("boxlite: write to the stdin pipe of a command not started")
	}
	if err := ex.writeStdin(p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (s *stdinPipe) Close() error {
	ex := s.ex.Load()
	if ex == nil {
		return errors.New("boxlite: close of the stdin pipe of a command not started")
	}
	err := ex.closeStdin()
	if isCode(err, CodeInvalidState) {
		return nil // the execution is over and freed: its stdin went with it
	}
	return err
}

// StdinPipe returns a pipe to the process's stdin, for use after Start; Close it to send
// end of file. Wait does not close it.
func (c *Cmd) StdinPipe() (io.WriteCloser, error) {
	if c.Stdin != nil {
		return nil, errors.New("boxlite: Stdin already set")
	}
	if c.ex != nil {
		return nil, errors.New("boxlite: StdinPipe after Start")
	}
	if c.stdinPipe == nil {
		c.stdinPipe = &stdinPipe{}
	}
	return c.stdinPipe, nil
}

// waitSlice is how long one bounded wait lasts between looks at the context.
const waitSlice = 100 * time.Millisecond

// wait waits for the end of the execution, at most limit (< 0: no limit; then
// ErrStillRunning), killing it when ctx is done.
func (ex *execution) wait(ctx context.Context, limit time.Duration) error {
	var deadline time.Time
	if limit >= 0 {
		deadline = time.Now().Add(limit)
	}
	killed := false
	for {
		ex.mu.Lock()
		finished := ex.finished
		ex.mu.Unlock()
		if finished {
			return nil
		}
		slice := waitSlice
		if limit >= 0 {
			if left := time.Until(deadline); left < slice {
				slice = max(left, 0)
			}
		}
		status := C.bx_exit_status_init()
		var err error
		useErr := ex.h.use(func(e *C.boxlite_execution_t) error {
			err = takeError(C.boxlite_execution_wait_timeout(&status, e, C.uint64_t(slice/time.Millisecond)))
			return nil
		})
		if useErr != nil { // freed by another Wait meanwhile
			ex.mu.Lock()
			finished := ex.finished
			ex.mu.Unlock()
			if finished {
				return nil
			}
			return useErr
		}
		if isCode(err, CodeStillRunning) {
			if !killed && ctx.Err() != nil {
				e := ctx.Err()
				ex.ctxErr.Store(&e)
				_ = ex.kill()
				killed = true
			}
			if limit >= 0 && !time.Now().Before(deadline) {
				return err
			}
			continue
		}
		ex.finish(exitStatus(&status), err)
		return nil
	}
}

// finish records the result and frees the handle (the callbacks are over: on_exit ran).
func (ex *execution) finish(status ExitStatus, err error) {
	ex.st.mu.Lock() // the callbacks' writes happen before what the caller reads next
	writeErr := ex.st.writeErr
	ex.st.mu.Unlock()
	ex.mu.Lock()
	defer ex.mu.Unlock()
	if ex.finished {
		return
	}
	ex.finished, ex.status, ex.err = true, status, err
	if err == nil && writeErr != nil {
		ex.err = writeErr
	}
	ex.h.close(func(e *C.boxlite_execution_t) { C.boxlite_execution_free(e) })
}

// Wait waits for the started command to end and frees its execution (its output has all
// been written by then). A nil result means exit code 0; a process that ran and failed is
// an *ExitError (errors.Is(err, ErrTimedOut) after its Timeout); a VM that died is
// ErrVMExited. If ctx (or Start's) ends first, the process group is killed and the
// context's error returned.
func (c *Cmd) Wait(ctx context.Context) error {
	return c.waitFor(ctx, -1)
}

// WaitTimeout is Wait for at most d: a command still running then is left running and
// the result is an error matching ErrStillRunning (the output so far has been written).
func (c *Cmd) WaitTimeout(d time.Duration) error {
	if d < 0 {
		d = 0
	}
	return c.waitFor(context.Background(), d)
}

func (c *Cmd) waitFor(ctx context.Context, limit time.Duration) error {
	if c.ex == nil {
		return errors.New("boxlite: not started")
	}
	if err := c.ex.wait(ctx, limit); err != nil {
		return err
	}
	c.ex.mu.Lock()
	status, err := c.ex.status, c.ex.err
	c.ex.mu.Unlock()
	// A context that ended as the process did (it still exited on its own) is no cause.
	if p := c.ex.ctxErr.Load(); p != nil && (err != nil || !status.Success()) {
		return *p
	}
	if err != nil {
		return err
	}
	c.ProcessState = &status
	if !status.Success() {
		e := &ExitError{ExitStatus: status}
		if c.stderrBuf != nil {
			e.Stderr = c.stderrBuf.Bytes()
		}
		return e
	}
	return nil
}

// Run starts the command and waits for it (Start, then Wait).
func (c *Cmd) Run(ctx context.Context) error {
	if err := c.Start(ctx); err != nil {
		return err
	}
	return c.Wait(ctx)
}

// Output runs the command and returns its standard output (also with an error: the
// output until a timeout). If Stderr is nil it is collected into the ExitError.
func (c *Cmd) Output(ctx context.Context) ([]byte, error) {
	if c.Stdout != nil {
		return nil, errors.New("boxlite: Stdout already set")
	}
	var out bytes.Buffer
	c.Stdout = &out
	if c.Stderr == nil {
		c.stderrBuf = &bytes.Buffer{}
		c.Stderr = c.stderrBuf
	}
	err := c.Run(ctx)
	return out.Bytes(), err
}

// CombinedOutput runs the command and returns its standard output and error together.
func (c *Cmd) CombinedOutput(ctx context.Context) ([]byte, error) {
	if c.Stdout != nil || c.Stderr != nil {
		return nil, errors.New("boxlite: Stdout or Stderr already set")
	}
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	err := c.Run(ctx)
	return out.Bytes(), err
}

// Kill kills the process and its process group (SIGKILL).
func (c *Cmd) Kill() error {
	if c.ex == nil {
		return errors.New("boxlite: not started")
	}
	return c.ex.kill()
}

// Signal sends sig to the process.
func (c *Cmd) Signal(sig syscall.Signal) error {
	if c.ex == nil {
		return errors.New("boxlite: not started")
	}
	return c.ex.h.use(func(e *C.boxlite_execution_t) error { return takeError(C.boxlite_execution_signal(e, C.int32_t(sig))) })
}

// Close kills the started command if it still runs and frees its execution handle (Wait
// frees it too; a finalizer closes a Cmd dropped without either). Closing twice, or a Cmd
// never started, does nothing.
func (c *Cmd) Close() error {
	if c.ex == nil {
		return nil
	}
	c.ex.mu.Lock()
	finished := c.ex.finished
	c.ex.mu.Unlock()
	if !finished {
		_ = c.ex.kill() // (an execution the library holds on to would keep its box running)
	}
	if c.ex.h.close(func(e *C.boxlite_execution_t) { C.boxlite_execution_free(e) }) {
		runtime.SetFinalizer(c, nil)
	}
	return nil
}
