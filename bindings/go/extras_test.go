package boxlite

// Beyond the scenario table: errors without a VM, files, ports, volumes, option errors.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestErrorsMatchTheirCodeOnly(t *testing.T) {
	err := fmt.Errorf("wrapped: %w", &Error{Code: CodeVMExited, Message: "the VM exited (signal 9)"})
	var e *Error
	if !errors.Is(err, ErrVMExited) || errors.Is(err, ErrNotFound) || !errors.As(err, &e) || e.Code != CodeVMExited {
		t.Errorf("%v: Is/As do not follow the code", err)
	}
	if errors.Is(ErrVMExited, &Error{Code: CodeVMExited, Message: "x"}) {
		t.Error("a sentinel matched an error with a message")
	}
	if err.Error() != "wrapped: boxlite: the VM exited (signal 9)" || ErrNotFound.Error() != "boxlite: not found" {
		t.Errorf("texts %q %q", err.Error(), ErrNotFound.Error())
	}
	timeout := &ExitError{ExitStatus: ExitStatus{ExitCode: -1, Signal: 9, TimedOut: true}}
	if !errors.Is(timeout, ErrTimedOut) || errors.Is(&ExitError{ExitStatus: ExitStatus{ExitCode: 1}}, ErrTimedOut) {
		t.Error("ErrTimedOut does not follow TimedOut")
	}
	if timeout.Error() != "signal: killed (timed out)" {
		t.Errorf("text %q", timeout.Error())
	}
}

func TestCopyInAndOut(t *testing.T) {
	rt := openRuntime(t, newHome(t))
	box := newBoxT(t, rt, BoxOptions{})
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "src"), 0o755)
	os.WriteFile(filepath.Join(dir, "src", "a.txt"), []byte("alpha"), 0o644)
	if err := box.CopyIn(bg, filepath.Join(dir, "src"), "/tmp"); err != nil {
		t.Fatal(err)
	}
	if out, err := box.Command("cat", "/tmp/src/a.txt").Output(bg); err != nil || string(out) != "alpha" {
		t.Errorf("copied in: %q, %v", out, err)
	}
	if err := box.Command("sh", "-c", "echo beta > /tmp/src/b.txt").Run(bg); err != nil {
		t.Fatal(err)
	}
	if err := box.CopyOut(bg, "/tmp/src", filepath.Join(dir, "back")); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "back", "b.txt")); err != nil || string(b) != "beta\n" {
		t.Errorf("copied out: %q, %v", b, err)
	}
	if err := box.CopyIn(bg, filepath.Join(dir, "missing"), "/tmp"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing source: %v", err)
	}
	ctx, cancel := context.WithCancel(bg)
	cancel()
	if err := box.CopyIn(ctx, filepath.Join(dir, "src"), "/tmp"); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled copy: %v", err)
	}
}

func TestPortForward(t *testing.T) {
	rt := openRuntime(t, newHome(t))
	box := newBoxT(t, rt, BoxOptions{Network: NetworkNone, Ports: []Port{{GuestPort: 8080}}})
	if err := box.Command("sh", "-c", "mkdir -p /tmp/www && echo served > /tmp/www/index.html").Run(bg); err != nil {
		t.Fatal(err)
	}
	httpd := box.Command("httpd", "-f", "-p", "8080", "-h", "/tmp/www")
	if err := httpd.Start(bg); err != nil {
		t.Fatal(err)
	}
	defer httpd.Close()
	port, err := box.ForwardedPort(TCP, 8080)
	if err != nil || port == 0 {
		t.Fatalf("forwarded port %d, %v", port, err)
	}
	fwds, err := box.PortForwards()
	if err != nil || len(fwds) != 1 || fwds[0].GuestPort != 8080 || fwds[0].HostPort != port || fwds[0].Protocol != TCP {
		t.Errorf("forwards %+v, %v", fwds, err)
	}
	var body []byte
	client := &http.Client{Timeout: 5 * time.Second}
	settle(10*time.Second, func() bool {
		resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ = io.ReadAll(resp.Body)
		return true
	})
	if string(body) != "served\n" {
		t.Errorf("body %q", body)
	}
	if _, err := box.ForwardedPort(TCP, 9999); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown forward: %v", err)
	}
}

func TestVolume(t *testing.T) {
	rt := openRuntime(t, newHome(t))
	shared := t.TempDir()
	os.WriteFile(filepath.Join(shared, "in.txt"), []byte("from host"), 0o644)
	// (the guest paths lie where the read-only test root has or can make a mount point)
	box := newBoxT(t, rt, BoxOptions{Volumes: []Volume{{HostPath: shared, GuestPath: "/tmp/rw"},
		{HostPath: shared, GuestPath: "/home/tester", ReadOnly: true}}})
	if out, err := box.Command("cat", "/tmp/rw/in.txt").Output(bg); err != nil || string(out) != "from host" {
		t.Errorf("read: %q, %v", out, err)
	}
	if err := box.Command("sh", "-c", "echo from box > /tmp/rw/out.txt").Run(bg); err != nil {
		t.Errorf("write: %v", err)
	}
	if err := box.Command("sh", "-c", "echo no > /home/tester/denied.txt").Run(bg); err == nil {
		t.Error("a read-only volume took a write")
	}
	if b, _ := os.ReadFile(filepath.Join(shared, "out.txt")); string(b) != "from box\n" {
		t.Errorf("host sees %q", b)
	}
	if _, err := os.Stat(filepath.Join(shared, "denied.txt")); err == nil {
		t.Error("denied.txt exists")
	}
	_, err := rt.CreateBox(bg, &BoxOptions{RootDisk: testRootfs(t), Volumes: []Volume{{HostPath: "relative/dir", GuestPath: "/mnt/x"}}})
	if !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("relative volume: %v", err)
	}
}

func TestOptionErrors(t *testing.T) {
	rt := openRuntime(t, newHome(t))
	rootfs := testRootfs(t)
	_, err := rt.CreateBox(bg, &BoxOptions{RootDisk: rootfs, DNS: []string{"not-an-address"}})
	if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "not-an-address") {
		t.Errorf("dns: %v", err)
	}
	if _, err := rt.CreateBox(bg, &BoxOptions{RootDisk: rootfs, Ports: []Port{{GuestPort: 0}}}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("guest port 0: %v", err)
	}
	if _, err := rt.CreateBox(bg, &BoxOptions{RootDisk: rootfs, Ports: []Port{{GuestPort: 80, Protocol: 7}}}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("protocol 7: %v", err)
	}
	if _, err := NewRuntime(&RuntimeOptions{Home: newHome(t), Engine: 42}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("engine 42: %v", err)
	}
	box := newBoxT(t, rt, BoxOptions{})
	cmd := box.Command("true")
	cmd.Env = []string{"NOEQUALS"}
	if err := cmd.Run(bg); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("env without '=': %v", err)
	}
	// A failed exec gives its callback handle back (user_data_free, exactly once).
	before := liveCallbacks.Load()
	if err := box.Command("/no/such/program").Run(bg); !errors.Is(err, ErrProgramNotFound) {
		t.Errorf("missing program: %v", err)
	}
	if liveCallbacks.Load() != before {
		t.Errorf("live callback handles %d, %d before", liveCallbacks.Load(), before)
	}
	ctx, cancel := context.WithCancel(bg)
	cancel()
	if err := box.Command("true").Run(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("a done context: %v", err)
	}
	if liveCallbacks.Load() != before {
		t.Errorf("live callback handles %d after a cancelled start, %d before", liveCallbacks.Load(), before)
	}
	box.Close()
	if err := box.Command("true").Run(bg); !errors.Is(err, ErrInvalidState) {
		t.Errorf("a closed box: %v", err)
	}
}
