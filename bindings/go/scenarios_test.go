package boxlite

// The scenarios of bindings/SCENARIOS.md (ids in the test names), with real VMs.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var bg = context.Background()

// TestMain doubles as the second process of S9 (the test binary re-executed).
func TestMain(m *testing.M) {
	if home := os.Getenv("BOXLITE_GO_S9_CHILD"); home != "" {
		os.Exit(s9Child(home))
	}
	os.Exit(m.Run())
}

// S1 -------------------------------------------------------------------------------------
func TestS1OpenCloseRuntime(t *testing.T) {
	home := newHome(t)
	rt, err := NewRuntime(&RuntimeOptions{Home: home, Engine: testEngine(t)})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := filepath.EvalSymlinks(home)
	got, _ := filepath.EvalSymlinks(rt.Home())
	if got != want {
		t.Errorf("home %q, asked for %q", rt.Home(), home)
	}
	if Version() != HeaderVersionString || VersionNumber() != HeaderVersion {
		t.Errorf("library %s (%d), header %s (%d)", Version(), VersionNumber(), HeaderVersionString, HeaderVersion)
	}
	// The home is locked while open: a second runtime on it is refused with its own error.
	_, err = NewRuntime(&RuntimeOptions{Home: home, Engine: testEngine(t)})
	var e *Error
	if !errors.Is(err, ErrHomeLocked) || !errors.As(err, &e) || e.Code != CodeHomeLocked {
		t.Fatalf("second runtime: %v, want ErrHomeLocked", err)
	}
	if !strings.Contains(e.Message, strconv.Itoa(os.Getpid())) {
		t.Errorf("message %q does not name pid %d", e.Message, os.Getpid())
	}
	if errors.Is(err, ErrNotFound) {
		t.Error("HOME_LOCKED matches ErrNotFound")
	}
	rt.Close()
	rt.Close() // twice: nothing
	if _, err := rt.GetBox(bg, "x"); !errors.Is(err, ErrInvalidState) {
		t.Errorf("call on a closed runtime: %v, want ErrInvalidState", err)
	}
	again, err := NewRuntime(&RuntimeOptions{Home: home, Engine: testEngine(t)}) // the lock went with the close
	if err != nil {
		t.Fatal(err)
	}
	again.Close()
}

// S2 -------------------------------------------------------------------------------------
func TestS2ExecOutputAndExitCode(t *testing.T) {
	box := newBoxT(t, openRuntime(t, newHome(t)), BoxOptions{})
	var stdout, stderr bytes.Buffer
	cmd := box.Command("sh", "-c", "echo out; echo err >&2; exit 3")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run(bg)
	var exitErr *ExitError
	if !errors.As(err, &exitErr) || exitErr.ExitCode != 3 || exitErr.TimedOut {
		t.Fatalf("Run: %v, want exit status 3", err)
	}
	if stdout.String() != "out\n" || stderr.String() != "err\n" {
		t.Errorf("stdout %q stderr %q", stdout.String(), stderr.String())
	}
	if cmd.ProcessState == nil || cmd.ProcessState.ExitCode != 3 || errors.Is(err, ErrTimedOut) {
		t.Errorf("ProcessState %v", cmd.ProcessState)
	}
	// Output: stderr of a failing command lands in the ExitError.
	out, err := box.Command("sh", "-c", "echo o; echo e >&2; exit 4").Output(bg)
	if !errors.As(err, &exitErr) || exitErr.ExitCode != 4 || string(exitErr.Stderr) != "e\n" || string(out) != "o\n" {
		t.Errorf("Output: %q, %v", out, err)
	}
	if err := box.Command("true").Run(bg); err != nil {
		t.Errorf("true: %v", err)
	}
	// env, working directory, user
	cmd = box.Command("sh", "-c", `echo "$GREETING $(pwd) $(id -u)"`)
	cmd.Env, cmd.Dir, cmd.User = []string{"GREETING=hi"}, "/tmp", "tester"
	if out, err := cmd.Output(bg); err != nil || string(out) != "hi /tmp 1000\n" {
		t.Errorf("env/dir/user: %q, %v", out, err)
	}
	err = box.Command("no-such-program").Run(bg)
	var e *Error
	if !errors.Is(err, ErrProgramNotFound) || !errors.As(err, &e) || !strings.Contains(e.Message, "no-such-program") {
		t.Errorf("missing program: %v", err)
	}
	if got := liveCallbacksSettled(t); got != 0 {
		t.Errorf("%d callback handles never freed", got)
	}
}

// liveCallbacksSettled waits for every handle given to the library to come back.
func liveCallbacksSettled(t *testing.T) int64 {
	settle(5*time.Second, func() bool { return liveCallbacks.Load() == 0 })
	return liveCallbacks.Load()
}

// S3 -------------------------------------------------------------------------------------
type countingHash struct {
	n int
	h interface{ Write([]byte) (int, error) }
}

func (c *countingHash) Write(p []byte) (int, error) { c.n += len(p); return c.h.Write(p) }

func TestS3Stream64MiBWithHash(t *testing.T) {
	box := newBoxT(t, openRuntime(t, newHome(t)), BoxOptions{})
	const size = 64 * 1024 * 1024
	line := []byte("boxlite stream test line\n")
	want := sha256.Sum256(bytes.Repeat(line, size/len(line)+1)[:size])
	h := sha256.New()
	stdout := &countingHash{h: h}
	var stderr bytes.Buffer
	cmd := box.Command("sh", "-c", fmt.Sprintf("yes 'boxlite stream test line' | head -c %d; echo done >&2", size))
	cmd.Stdout, cmd.Stderr = stdout, &stderr
	if err := cmd.Run(bg); err != nil {
		t.Fatal(err)
	}
	if stdout.n != size || !bytes.Equal(h.Sum(nil), want[:]) {
		t.Errorf("%d bytes, sha256 %x; want %d, %x", stdout.n, h.Sum(nil), size, want)
	}
	if stderr.String() != "done\n" {
		t.Errorf("stderr %q", stderr.String())
	}
	if cmd.ProcessState.ExitCode != 0 {
		t.Errorf("exit %v", cmd.ProcessState)
	}
}

// S4 -------------------------------------------------------------------------------------
func TestS4Stdin(t *testing.T) {
	box := newBoxT(t, openRuntime(t, newHome(t)), BoxOptions{})
	cmd := box.Command("cat")
	cmd.Stdin = bytes.NewReader([]byte("hello\x00world"))
	if out, err := cmd.Output(bg); err != nil || string(out) != "hello\x00world" {
		t.Errorf("cat: %q, %v", out, err)
	}
	data := make([]byte, 1024*1024)
	rand.Read(data)
	cmd = box.Command("sha256sum")
	var out bytes.Buffer
	cmd.Stdout = &out
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(bg); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(data); i += 64 * 1024 {
		if _, err := stdin.Write(data[i : i+64*1024]); err != nil {
			t.Fatal(err)
		}
	}
	stdin.Close()
	ctx, cancel := context.WithTimeout(bg, 60*time.Second)
	defer cancel()
	if err := cmd.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	if f := strings.Fields(out.String()); len(f) == 0 || f[0] != hex.EncodeToString(sum[:]) {
		t.Errorf("box sha256sum %q, host %x", out.String(), sum)
	}
	// a streamed command fed from stdin
	cmd = box.Command("tr", "a-z", "A-Z")
	cmd.Stdin = strings.NewReader("shout")
	var up bytes.Buffer
	cmd.Stdout = &up
	if err := cmd.Run(bg); err != nil || up.String() != "SHOUT" {
		t.Errorf("tr: %q, %v", up.String(), err)
	}
}

// lockedBuffer may be read while the library's thread writes to it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// S5 -------------------------------------------------------------------------------------
func TestS5TimeoutKillsTheGroupAndKeepsPartialOutput(t *testing.T) {
	box := newBoxT(t, openRuntime(t, newHome(t)), BoxOptions{})
	script := "echo started; sleep 1000 & echo child >&2; sleep 1000"
	var stdout, stderr bytes.Buffer
	cmd := box.Command("sh", "-c", script)
	cmd.Stdout, cmd.Stderr, cmd.Timeout = &stdout, &stderr, time.Second
	t0 := time.Now()
	err := cmd.Run(bg)
	if d := time.Since(t0); d > 10*time.Second {
		t.Errorf("took %v", d)
	}
	var exitErr *ExitError
	if !errors.Is(err, ErrTimedOut) || !errors.As(err, &exitErr) || exitErr.Signal != 9 || exitErr.ExitCode != -1 {
		t.Fatalf("Run: %v, want a timeout with signal 9", err)
	}
	if stdout.String() != "started\n" || stderr.String() != "child\n" {
		t.Errorf("partial output %q %q", stdout.String(), stderr.String())
	}
	// the background child went with its group
	if ps, err := box.Command("ps").Output(bg); err != nil || strings.Contains(string(ps), "sleep 1000") {
		t.Errorf("ps: %v\n%s", err, ps)
	}
	// Output keeps the partial output beside the timeout error.
	cmd = box.Command("sh", "-c", script)
	cmd.Timeout = 500 * time.Millisecond
	out, err := cmd.Output(bg)
	if !errors.Is(err, ErrTimedOut) || string(out) != "started\n" || !errors.As(err, &exitErr) || string(exitErr.Stderr) != "child\n" {
		t.Errorf("Output with a timeout: %q, %v", out, err)
	}
	// A bounded wait on a background command: ErrStillRunning with the output so far.
	var partial lockedBuffer
	cmd = box.Command("sh", "-c", "echo partial; sleep 1000")
	cmd.Stdout = &partial
	if err := cmd.Start(bg); err != nil {
		t.Fatal(err)
	}
	if err := cmd.WaitTimeout(time.Second); !errors.Is(err, ErrStillRunning) {
		t.Errorf("bounded wait: %v, want ErrStillRunning", err)
	}
	if partial.String() != "partial\n" {
		t.Errorf("output so far %q", partial.String())
	}
	if err := cmd.Kill(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(bg, 10*time.Second)
	defer cancel()
	if err := cmd.Wait(ctx); !errors.As(err, &exitErr) || exitErr.Signal != 9 {
		t.Errorf("after Kill: %v, want signal 9", err)
	}
	// Signal reaches the process.
	cmd = box.Command("sleep", "1000")
	if err := cmd.Start(bg); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(ctx); !errors.As(err, &exitErr) || exitErr.Signal != int(syscall.SIGTERM) {
		t.Errorf("after SIGTERM: %v", err)
	}
	// Cancelling the context kills the process (and Wait says why).
	cctx, ccancel := context.WithCancel(bg)
	cmd = box.Command("sleep", "1000")
	if err := cmd.Start(cctx); err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(300*time.Millisecond, ccancel)
	t0 = time.Now()
	if err := cmd.Wait(bg); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v, want context.Canceled", err)
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Errorf("cancellation took %v", d)
	}
	// ... and a deadline on Wait alone does too.
	dctx, dcancel := context.WithTimeout(bg, 300*time.Millisecond)
	defer dcancel()
	if err := box.Command("sleep", "1000").Run(dctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("deadline: %v", err)
	}
	if ps, _ := box.Command("ps").Output(bg); strings.Contains(string(ps), "sleep 1000") {
		t.Errorf("a cancelled sleep is still there:\n%s", ps)
	}
}

// S6 -------------------------------------------------------------------------------------
func TestS6BadOptionErrorTypeAndMessage(t *testing.T) {
	rt := openRuntime(t, newHome(t))
	rootfs := testRootfs(t)
	var e *Error
	// (CPUs 0 is the Go zero value, "the default"; 256 is out of range the same way.)
	_, err := rt.CreateBox(bg, &BoxOptions{RootDisk: rootfs, RootDiskReadOnly: true, CPUs: 256})
	if !errors.Is(err, ErrInvalidArgument) || !errors.As(err, &e) || e.Code != CodeInvalidArgument ||
		!strings.Contains(strings.ToLower(e.Message), "cpu") {
		t.Errorf("256 vCPUs: %v", err)
	}
	_, err = rt.CreateBox(bg, &BoxOptions{RootDisk: rootfs, Network: NetworkAllowList, Allow: []string{"10.0.0.1/8"}})
	if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "10.0.0.1/8") {
		t.Errorf("allow rule: %v", err)
	}
	_, err = rt.CreateBox(bg, &BoxOptions{RootDisk: "/nonexistent/disk.ext4"})
	if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "/nonexistent/disk.ext4") {
		t.Errorf("missing root disk: %v", err)
	}
	_, err = rt.CreateBox(bg, &BoxOptions{RootDisk: rootfs, Network: NetworkMode(77)})
	if !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("unknown network mode: %v", err)
	}
	_, err = rt.GetBox(bg, "no-such-box")
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "no-such-box") {
		t.Errorf("unknown box: %v", err)
	}
	cmd := &Cmd{Path: "x"}
	cmd.box = nil
	if err := cmd.Run(bg); err == nil {
		t.Error("a Cmd without a box ran")
	}
}

// S7 -------------------------------------------------------------------------------------
func TestS7DroppedInAnyOrderNoLeaks(t *testing.T) {
	for _, order := range []string{"runtime-box-execution", "execution-box-runtime", "box-runtime-execution", "gc"} {
		t.Run(order, func(t *testing.T) {
			home := newHome(t)
			rootfs := testRootfs(t)
			// Warm up what the library keeps for the whole process (its threads and their fds).
			func() {
				rt := openRuntime(t, home)
				b := newBoxT(t, rt, BoxOptions{})
				if err := b.Command("true").Run(bg); err != nil {
					t.Fatal(err)
				}
				b.Close()
				rt.Close()
			}()
			if !settle(10*time.Second, func() bool { return len(ourShims()) == 0 }) {
				t.Fatalf("warm-up left shims %v", ourShims())
			}
			fds := openFds()

			func() { // (in a function, so that nothing on this stack holds the objects)
				rt, err := NewRuntime(&RuntimeOptions{Home: home, Engine: testEngine(t)})
				if err != nil {
					t.Fatal(err)
				}
				box, err := rt.CreateBox(bg, &BoxOptions{RootDisk: rootfs, RootDiskReadOnly: true})
				if err != nil {
					t.Fatal(err)
				}
				cmd := box.Command("cat")
				stdin, _ := cmd.StdinPipe()
				if err := cmd.Start(bg); err != nil {
					t.Fatal(err)
				}
				if _, err := stdin.Write([]byte("x")); err != nil {
					t.Fatal(err)
				}
				if n := len(ourShims()); n != 1 {
					t.Errorf("%d shims running, want 1", n)
				}
				if order == "gc" {
					return
				}
				closers := map[string]func() error{"runtime": rt.Close, "box": box.Close, "execution": cmd.Close}
				for _, name := range strings.Split(order, "-") {
					closers[name]()
				}
			}()
			ok := settle(20*time.Second, func() bool { runtime.GC(); return len(ourShims()) == 0 })
			if !ok {
				t.Errorf("helper processes left: %v", ourShims())
			}
			if !settle(10*time.Second, func() bool { runtime.GC(); return openFds() <= fds }) {
				t.Errorf("%d fds open, %d before", openFds(), fds)
			}
			if !settle(10*time.Second, func() bool { runtime.GC(); return liveCallbacks.Load() == 0 }) {
				t.Errorf("%d callback handles never freed", liveCallbacks.Load())
			}
			// The home is free again (every handle really went).
			rt, err := NewRuntime(&RuntimeOptions{Home: home, Engine: testEngine(t)})
			if err != nil {
				t.Fatal(err)
			}
			rt.Close()
		})
	}
}

// S8 -------------------------------------------------------------------------------------
func TestS8TwoBoxesAtOnce(t *testing.T) {
	rt := openRuntime(t, newHome(t))
	one := newBoxT(t, rt, BoxOptions{Name: "one"})
	two := newBoxT(t, rt, BoxOptions{Name: "two"})
	for _, b := range []*Box{one, two} {
		if err := b.Start(bg); err != nil {
			t.Fatal(err)
		}
		if err := b.Command("true").Run(bg); err != nil { // (the first exec of a boot is the slow one)
			t.Fatal(err)
		}
	}
	if n := len(ourShims()); n != 2 {
		t.Errorf("%d shims, want 2", n)
	}
	// Both boxes hold a running process at the same moment: each waits on its stdin, and a
	// bounded wait finds both still running before either is let go (no timing asserted).
	cmds := make([]*Cmd, 2)
	stdins := make([]io.WriteCloser, 2)
	outs := make([]bytes.Buffer, 2)
	for i, b := range []*Box{one, two} {
		cmds[i] = b.Command("sh", "-c", "read word; echo "+b.Name()+" $word")
		cmds[i].Stdout = &outs[i]
		pipe, err := cmds[i].StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdins[i] = pipe
		if err := cmds[i].Start(bg); err != nil {
			t.Fatal(err)
		}
		defer cmds[i].Close()
	}
	for i, c := range cmds {
		if err := c.WaitTimeout(200 * time.Millisecond); !errors.Is(err, ErrStillRunning) {
			t.Fatalf("box %d's process did not wait on its stdin: %v", i, err)
		}
	}
	for i, c := range cmds {
		if _, err := io.WriteString(stdins[i], "go\n"); err != nil {
			t.Fatal(err)
		}
		stdins[i].Close()
		if err := c.Wait(bg); err != nil {
			t.Fatal(err)
		}
	}
	if outs[0].String() != "one go\n" || outs[1].String() != "two go\n" {
		t.Errorf("outputs %q and %q", outs[0].String(), outs[1].String())
	}
	boxes, err := rt.ListBoxes(bg)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, b := range boxes {
		names = append(names, b.Name())
		b.Close()
	}
	if strings.Join(names, ",") != "one,two" {
		t.Errorf("listed %v", names)
	}
}

// S9 -------------------------------------------------------------------------------------
func s9Child(home string) int {
	rt, err := NewRuntime(&RuntimeOptions{Home: home, Engine: testEngine(nil)})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer rt.Close()
	box, err := rt.CreateBox(bg, &BoxOptions{RootDisk: os.Getenv("BOXLITE_TEST_ROOTFS"), RootDiskReadOnly: true, Name: "keeper"})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer box.Close()
	out, err := box.Command("echo", "first").Output(bg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(box.ID(), strings.TrimSpace(string(out)))
	return 0
}

func TestS9FoundAgainByNameFromAnotherProcess(t *testing.T) {
	home := newHome(t)
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), "BOXLITE_GO_S9_CHILD="+home, "BOXLITE_TEST_ROOTFS="+testRootfs(t))
	var stderr bytes.Buffer
	child.Stderr = &stderr
	out, err := child.Output()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, stderr.String())
	}
	fields := strings.Fields(string(out))
	if len(fields) != 2 || fields[1] != "first" {
		t.Fatalf("child printed %q", out)
	}
	id := fields[0]
	rt := openRuntime(t, home)
	box, err := rt.GetBox(bg, "keeper")
	if err != nil {
		t.Fatal(err)
	}
	defer box.Close()
	if box.ID() != id || box.Name() != "keeper" {
		t.Errorf("found %s %s, want %s keeper", box.ID(), box.Name(), id)
	}
	if s, err := box.Status(); err != nil || s != StatusStopped {
		t.Errorf("status %v, %v; want stopped", s, err)
	}
	if out, err := box.Command("echo", "again").Output(bg); err != nil || string(out) != "again\n" {
		t.Errorf("again: %q, %v", out, err)
	}
	byID, err := rt.GetBox(bg, id)
	if err != nil {
		t.Fatal(err)
	}
	defer byID.Close()
	if byID.Name() != "keeper" {
		t.Errorf("by id: %q", byID.Name())
	}
}

// S10 ------------------------------------------------------------------------------------
func TestS10VMKilledMidExecFailsFast(t *testing.T) {
	rt := openRuntime(t, newHome(t))
	box := newBoxT(t, rt, BoxOptions{})
	var stdout lockedBuffer
	cmd := box.Command("sh", "-c", "echo before; sleep 1000")
	cmd.Stdout = &stdout
	if err := cmd.Start(bg); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(rt.Home(), "boxes", box.ID(), "shim.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	t0 := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(bg, 30*time.Second)
	defer cancel()
	err = cmd.Wait(ctx)
	if d := time.Since(t0); d > 5*time.Second {
		t.Errorf("the error took %v", d)
	}
	var e *Error
	if !errors.Is(err, ErrVMExited) || !errors.As(err, &e) || !strings.Contains(e.Message, "signal 9") {
		t.Fatalf("Wait: %v, want ErrVMExited naming signal 9", err)
	}
	if stdout.String() != "before\n" {
		t.Errorf("output so far %q", stdout.String())
	}
	if !settle(5*time.Second, func() bool { s, _ := box.Status(); return s == StatusStopped }) {
		s, err := box.Status()
		t.Errorf("box %v, %v; want stopped", s, err)
	}
	if reason, _ := box.StopReason(); !strings.Contains(reason, "signal 9") {
		t.Errorf("stop reason %q", reason)
	}
}
