package boxlite

import (
	"context"
	"sync"
)

// handle guards one library handle: calls hold the read lock for as long as the library
// uses the pointer, and close takes the write lock, so a handle is never freed under a
// running call (Close waits for it) and never used after it was freed.
type handle[P comparable] struct {
	mu   sync.RWMutex
	p    P
	what string // "runtime", "box", "execution": named by the closed error
}

// use runs f with the live pointer, or fails with ErrInvalidState once closed.
func (h *handle[P]) use(f func(p P) error) error {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.p == zero[P]() {
		return closedError(h.what)
	}
	return f(h.p)
}

// useCtx is use for a call that blocks in the library: it returns ctx.Err() as soon as ctx
// is done, leaving f to finish in the background (still holding the read lock, so the
// handle outlives it); f's result is then dropped.
func (h *handle[P]) useCtx(ctx context.Context, f func(p P) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if ctx.Done() == nil {
		return h.use(f)
	}
	h.mu.RLock()
	if h.p == zero[P]() {
		h.mu.RUnlock()
		return closedError(h.what)
	}
	p := h.p
	ch := make(chan error, 1)
	go func() {
		defer h.mu.RUnlock()
		ch <- f(p)
	}()
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// close frees the pointer once; it reports whether this call did.
func (h *handle[P]) close(free func(p P)) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.p == zero[P]() {
		return false
	}
	free(h.p)
	h.p = zero[P]()
	return true
}

func zero[P comparable]() P {
	var z P
	return z
}
