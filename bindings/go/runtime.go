package boxlite

// #include <boxlite.h>
// #include <stdlib.h>
import "C"

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
)

// Engine chooses the hypervisor (RuntimeOptions.Engine).
type Engine uint32

// The engines of include/boxlite.h.
const (
	EngineAuto Engine = C.BOXLITE_ENGINE_AUTO // krun where it works, else qemu
	EngineKrun Engine = C.BOXLITE_ENGINE_KRUN
	EngineQEMU Engine = C.BOXLITE_ENGINE_QEMU
)

// RuntimeOptions configure NewRuntime; the zero value (or nil) means the defaults.
type RuntimeOptions struct {
	Home               string // "" : $BOXLITE_HOME or ~/.boxlite
	Engine             Engine // EngineAuto by default
	LogToHome          bool   // also write <home>/logs/boxlite.log
	InsecureRegistries []string
}

// Runtime is an open home: boxes and images. Close it when done (a finalizer frees a
// forgotten one, but only Close lets go of the home's lock at a known time). Safe for
// concurrent use.
type Runtime struct {
	h handle[*C.boxlite_runtime_t]
}

// NewRuntime opens a home. A home held by another runtime (in any process) fails with
// ErrHomeLocked, its message naming the holder's pid.
func NewRuntime(opts *RuntimeOptions) (*Runtime, error) {
	if opts == nil {
		opts = &RuntimeOptions{}
	}
	var o *C.boxlite_runtime_options_t
	if err := takeError(C.boxlite_runtime_options_new(&o)); err != nil {
		return nil, err
	}
	defer C.boxlite_runtime_options_free(o)
	if opts.Home != "" {
		s := cstr(opts.Home)
		err := takeError(C.boxlite_runtime_options_set_home(o, s))
		free(s)
		if err != nil {
			return nil, err
		}
	}
	if err := takeError(C.boxlite_runtime_options_set_engine(o, C.boxlite_engine_t(opts.Engine))); err != nil {
		return nil, err
	}
	if err := takeError(C.boxlite_runtime_options_set_log_to_home(o, C.bool(opts.LogToHome))); err != nil {
		return nil, err
	}
	for _, r := range opts.InsecureRegistries {
		s := cstr(r)
		err := takeError(C.boxlite_runtime_options_add_insecure_registry(o, s))
		free(s)
		if err != nil {
			return nil, err
		}
	}
	var p *C.boxlite_runtime_t
	if err := takeError(C.boxlite_runtime_new(&p, o)); err != nil {
		return nil, err
	}
	r := &Runtime{h: handle[*C.boxlite_runtime_t]{p: p, what: "runtime"}}
	runtime.SetFinalizer(r, (*Runtime).Close)
	return r, nil
}

// Close frees the runtime. Boxes and commands still open keep what they need (the home
// lock included) until they are closed too. Closing twice does nothing.
func (r *Runtime) Close() error {
	if r.h.close(func(p *C.boxlite_runtime_t) { C.boxlite_runtime_free(p) }) {
		runtime.SetFinalizer(r, nil)
	}
	return nil
}

// Home is the runtime's home directory ("" once closed).
func (r *Runtime) Home() string {
	var home string
	_ = r.h.use(func(p *C.boxlite_runtime_t) error {
		home = C.GoString(C.boxlite_runtime_home(p))
		return nil
	})
	return home
}

// CreateBox makes a box (it boots on its first command or Start). Every option is checked
// here: a bad one fails with ErrInvalidArgument, its message naming it.
func (r *Runtime) CreateBox(ctx context.Context, opts *BoxOptions) (*Box, error) {
	if opts == nil {
		opts = &BoxOptions{}
	}
	o, err := opts.build()
	if err != nil {
		return nil, err
	}
	// Whoever claims o first frees it: the call, or this function if the call never ran.
	var claim atomic.Int32
	b, err := r.boxCall(ctx, func(out **C.boxlite_box_t, p *C.boxlite_runtime_t) *C.boxlite_error_t {
		if !claim.CompareAndSwap(0, 1) {
			return nil // gave up before it ran; *out stays NULL
		}
		defer C.boxlite_box_options_free(o)
		return C.boxlite_box_create(out, p, o)
	})
	if claim.CompareAndSwap(0, 2) {
		C.boxlite_box_options_free(o)
	}
	if err != nil {
		return nil, err
	}
	b.autoRemove = opts.AutoRemove
	return b, nil
}

// GetBox finds a box by id or name (ErrNotFound, its message naming what was asked for).
func (r *Runtime) GetBox(ctx context.Context, idOrName string) (*Box, error) {
	return r.boxCall(ctx, func(out **C.boxlite_box_t, p *C.boxlite_runtime_t) *C.boxlite_error_t {
		s := cstr(idOrName)
		defer free(s)
		return C.boxlite_runtime_get_box(out, p, s)
	})
}

// boxCall runs a call that makes a box; a box made after ctx gave up is freed.
func (r *Runtime) boxCall(ctx context.Context, f func(**C.boxlite_box_t, *C.boxlite_runtime_t) *C.boxlite_error_t) (*Box, error) {
	var mu sync.Mutex
	abandoned := false
	var made *C.boxlite_box_t
	err := r.h.useCtx(ctx, func(p *C.boxlite_runtime_t) error {
		var out *C.boxlite_box_t
		if err := takeError(f(&out, p)); err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		if out == nil {
			return closedError("runtime")
		}
		if abandoned {
			C.boxlite_box_free(out)
		} else {
			made = out
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	if err != nil {
		abandoned = true
		if made != nil {
			C.boxlite_box_free(made)
		}
		return nil, err
	}
	return newBox(made), nil
}

// ListBoxes gives every box of the home, oldest first (each to be closed).
func (r *Runtime) ListBoxes(ctx context.Context) ([]*Box, error) {
	var boxes []*Box
	err := r.h.useCtx(ctx, func(p *C.boxlite_runtime_t) error {
		var list *C.boxlite_box_list_t
		if err := takeError(C.boxlite_runtime_list_boxes(&list, p)); err != nil {
			return err
		}
		defer C.boxlite_box_list_free(list)
		var n C.size_t
		if err := takeError(C.boxlite_box_list_len(&n, list)); err != nil {
			return err
		}
		var got []*Box
		for i := C.size_t(0); i < n; i++ {
			var b *C.boxlite_box_t
			if err := takeError(C.boxlite_box_list_get(&b, list, i)); err != nil {
				for _, x := range got {
					x.Close()
				}
				return err
			}
			got = append(got, newBox(b))
		}
		boxes = got // (dropped, and left to the finalizers, if ctx gave up)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return boxes, nil
}
