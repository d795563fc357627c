package boxlite

// #include "helpers.h"
import "C"

import (
	"context"
	"runtime"
	"strconv"
	"time"
)

// NetworkMode says where a box's outbound traffic may go (BoxOptions.Network). The zero
// value leaves the library's default (outbound).
type NetworkMode uint32

// The network modes (docs/network.md). Their values are the C ones plus one, so that the
// zero value can mean "the default".
const (
	NetworkDefault   NetworkMode = 0
	NetworkNone      NetworkMode = C.BOXLITE_NETWORK_NONE + 1
	NetworkOutbound  NetworkMode = C.BOXLITE_NETWORK_OUTBOUND + 1
	NetworkAllowList NetworkMode = C.BOXLITE_NETWORK_ALLOW_LIST + 1 // only the Allow rules
)

// Protocol is a port forward's transport.
type Protocol uint32

// The protocols of include/boxlite.h.
const (
	TCP Protocol = C.BOXLITE_PROTOCOL_TCP
	UDP Protocol = C.BOXLITE_PROTOCOL_UDP
)

func (p Protocol) String() string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	}
	return "protocol(" + itoa(int(p)) + ")"
}

// Port forwards HostAddr:HostPort on the host to GuestPort in the box. HostAddr "" is
// 127.0.0.1; HostPort 0 lets the host pick one when the box starts (Box.ForwardedPort).
type Port struct {
	Protocol  Protocol
	HostAddr  string
	HostPort  uint16
	GuestPort uint16
}

// Volume shares the host directory HostPath (absolute) into the box at GuestPath.
type Volume struct {
	HostPath  string
	GuestPath string
	ReadOnly  bool
}

// BoxOptions configure Runtime.CreateBox; zero fields keep the library's defaults. All of
// them are checked at CreateBox.
type BoxOptions struct {
	Name             string
	Image            string // an image reference of the home (or RootDisk)
	RootDisk         string // a raw ext4 image
	RootDiskReadOnly bool   // several boxes may share the disk
	CPUs             uint32 // 0: the default
	MemoryMiB        uint32 // 0: the default
	DiskSizeGiB      uint32 // 0: the default
	Detached         bool   // the box outlives its handles (and this process)

	Network           NetworkMode
	Allow             []string // allow-list rules (NetworkAllowList): "10.0.0.0/8", "pypi.org:443"
	AllowHostLoopback bool
	Ports             []Port
	DNS               []string // upstream DNS servers: "IP" or "IP:PORT"
	Volumes           []Volume

	// AutoRemove removes the box (stopping it first) when it is closed with Close.
	AutoRemove bool
}

func (o *BoxOptions) build() (*C.boxlite_box_options_t, error) {
	var p *C.boxlite_box_options_t
	if err := takeError(C.boxlite_box_options_new(&p)); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			C.boxlite_box_options_free(p)
		}
	}()
	withStr := func(s string, f func(*C.char) *C.boxlite_error_t) error {
		c := cstr(s)
		defer free(c)
		return takeError(f(c))
	}
	var steps []func() error
	if o.Name != "" {
		steps = append(steps, func() error {
			return withStr(o.Name, func(c *C.char) *C.boxlite_error_t { return C.boxlite_box_options_set_name(p, c) })
		})
	}
	if o.Image != "" {
		steps = append(steps, func() error {
			return withStr(o.Image, func(c *C.char) *C.boxlite_error_t { return C.boxlite_box_options_set_image(p, c) })
		})
	}
	if o.RootDisk != "" {
		flags := C.uint32_t(0)
		if o.RootDiskReadOnly {
			flags = C.BOXLITE_DISK_READ_ONLY
		}
		steps = append(steps, func() error {
			return withStr(o.RootDisk, func(c *C.char) *C.boxlite_error_t { return C.boxlite_box_options_set_root_disk(p, c, flags) })
		})
	}
	if o.CPUs != 0 {
		steps = append(steps, func() error { return takeError(C.boxlite_box_options_set_cpus(p, C.uint32_t(o.CPUs))) })
	}
	if o.MemoryMiB != 0 {
		steps = append(steps, func() error { return takeError(C.boxlite_box_options_set_memory_mib(p, C.uint32_t(o.MemoryMiB))) })
	}
	if o.DiskSizeGiB != 0 {
		steps = append(steps, func() error { return takeError(C.boxlite_box_options_set_disk_size_gib(p, C.uint32_t(o.DiskSizeGiB))) })
	}
	if o.Detached {
		steps = append(steps, func() error { return takeError(C.boxlite_box_options_set_detached(p, true)) })
	}
	if o.Network != NetworkDefault {
		steps = append(steps, func() error {
			return takeError(C.boxlite_box_options_set_network(p, C.boxlite_network_mode_t(o.Network-1)))
		})
	}
	for _, rule := range o.Allow {
		rule := rule
		steps = append(steps, func() error {
			return withStr(rule, func(c *C.char) *C.boxlite_error_t { return C.boxlite_box_options_add_network_allow(p, c) })
		})
	}
	if o.AllowHostLoopback {
		steps = append(steps, func() error { return takeError(C.boxlite_box_options_set_allow_host_loopback(p, true)) })
	}
	for _, port := range o.Ports {
		port := port
		steps = append(steps, func() error {
			addr := optCstr(port.HostAddr)
			defer free(addr)
			return takeError(C.boxlite_box_options_add_port_forward(p, C.boxlite_protocol_t(port.Protocol), addr,
				C.uint16_t(port.HostPort), C.uint16_t(port.GuestPort)))
		})
	}
	for _, dns := range o.DNS {
		dns := dns
		steps = append(steps, func() error {
			return withStr(dns, func(c *C.char) *C.boxlite_error_t { return C.boxlite_box_options_add_dns_server(p, c) })
		})
	}
	for _, v := range o.Volumes {
		v := v
		steps = append(steps, func() error {
			h, g := cstr(v.HostPath), cstr(v.GuestPath)
			defer free(h)
			defer free(g)
			flags := C.uint32_t(0)
			if v.ReadOnly {
				flags = C.BOXLITE_VOLUME_READ_ONLY
			}
			return takeError(C.boxlite_box_options_add_volume(p, h, g, flags))
		})
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return nil, err
		}
	}
	ok = true
	return p, nil
}

// Status is a box's state.
type Status uint32

// The states of include/boxlite.h.
const (
	StatusConfigured Status = C.BOXLITE_BOX_CONFIGURED
	StatusRunning    Status = C.BOXLITE_BOX_RUNNING
	StatusStopped    Status = C.BOXLITE_BOX_STOPPED
	StatusRemoved    Status = C.BOXLITE_BOX_REMOVED
)

func (s Status) String() string {
	switch s {
	case StatusConfigured:
		return "configured"
	case StatusRunning:
		return "running"
	case StatusStopped:
		return "stopped"
	case StatusRemoved:
		return "removed"
	}
	return "status(" + itoa(int(s)) + ")"
}

// Box is a handle on a box. Close it when done (a finalizer frees a forgotten one); a box
// that no handle holds any more is stopped unless it is detached. Safe for concurrent use.
type Box struct {
	h          handle[*C.boxlite_box_t]
	id, name   string
	autoRemove bool
}

func newBox(p *C.boxlite_box_t) *Box {
	b := &Box{h: handle[*C.boxlite_box_t]{p: p, what: "box"}}
	b.id = C.GoString(C.boxlite_box_id(p))
	if n := C.boxlite_box_name(p); n != nil {
		b.name = C.GoString(n)
	}
	runtime.SetFinalizer(b, (*Box).finalize)
	return b
}

// ID is the box's id.
func (b *Box) ID() string { return b.id }

// Name is the box's name ("" if it has none).
func (b *Box) Name() string { return b.name }

// Close frees the handle, removing the box first (forced) if it was made with AutoRemove.
// Closing twice does nothing.
func (b *Box) Close() error {
	var err error
	if b.autoRemove {
		err = b.Remove(context.Background(), true)
		if err != nil && isCode(err, CodeInvalidState) {
			err = nil // closed already
		}
	}
	if b.h.close(func(p *C.boxlite_box_t) { C.boxlite_box_free(p) }) {
		runtime.SetFinalizer(b, nil)
	}
	return err
}

// finalize frees the handle without the (blocking) auto-removal.
func (b *Box) finalize() { b.h.close(func(p *C.boxlite_box_t) { C.boxlite_box_free(p) }) }

func isCode(err error, c Code) bool {
	e, ok := err.(*Error)
	return ok && e.Code == c
}

// Image is the box's image reference ("" for a root disk).
func (b *Box) Image() string {
	var s string
	_ = b.h.use(func(p *C.boxlite_box_t) error {
		if c := C.boxlite_box_image(p); c != nil {
			s = C.GoString(c)
		}
		return nil
	})
	return s
}

// Status is the box's state now.
func (b *Box) Status() (Status, error) {
	var s C.boxlite_box_status_t
	err := b.h.use(func(p *C.boxlite_box_t) error { return takeError(C.boxlite_box_status(&s, p)) })
	return Status(s), err
}

// StopReason says why the box last stopped ("" if it has not).
func (b *Box) StopReason() (string, error) {
	var reason string
	err := b.h.use(func(p *C.boxlite_box_t) error {
		var c *C.char
		if err := takeError(C.boxlite_box_stop_reason(&c, p)); err != nil {
			return err
		}
		if c != nil {
			reason = C.GoString(c)
			C.boxlite_string_free(c)
		}
		return nil
	})
	return reason, err
}

// CreatedAt is when the box was made.
func (b *Box) CreatedAt() (time.Time, error) {
	var t C.uint64_t
	err := b.h.use(func(p *C.boxlite_box_t) error { return takeError(C.boxlite_box_created_at(&t, p)) })
	return time.Unix(int64(t), 0), err
}

// Start boots the box (a running box: nothing to do).
func (b *Box) Start(ctx context.Context) error {
	return b.h.useCtx(ctx, func(p *C.boxlite_box_t) error { return takeError(C.boxlite_box_start(p)) })
}

// Stop stops the box.
func (b *Box) Stop(ctx context.Context) error {
	return b.h.useCtx(ctx, func(p *C.boxlite_box_t) error { return takeError(C.boxlite_box_stop(p)) })
}

// Restart stops and boots the box.
func (b *Box) Restart(ctx context.Context) error {
	return b.h.useCtx(ctx, func(p *C.boxlite_box_t) error { return takeError(C.boxlite_box_restart(p)) })
}

// Remove deletes the box from its home; force stops a running one first.
func (b *Box) Remove(ctx context.Context, force bool) error {
	flags := C.uint32_t(0)
	if force {
		flags = C.BOXLITE_REMOVE_FORCE
	}
	return b.h.useCtx(ctx, func(p *C.boxlite_box_t) error { return takeError(C.boxlite_box_remove(p, flags)) })
}

// CopyIn copies hostSrc (a file or a tree) into the box at guestDest (docker cp's rules).
func (b *Box) CopyIn(ctx context.Context, hostSrc, guestDest string) error {
	return b.h.useCtx(ctx, func(p *C.boxlite_box_t) error {
		s, d := cstr(hostSrc), cstr(guestDest)
		defer free(s)
		defer free(d)
		return takeError(C.boxlite_box_copy_in(p, s, d, 0))
	})
}

// CopyOut copies guestSrc out of the box to hostDest (docker cp's rules).
func (b *Box) CopyOut(ctx context.Context, guestSrc, hostDest string) error {
	return b.h.useCtx(ctx, func(p *C.boxlite_box_t) error {
		s, d := cstr(guestSrc), cstr(hostDest)
		defer free(s)
		defer free(d)
		return takeError(C.boxlite_box_copy_out(p, s, d, 0))
	})
}

// ForwardedPort is the host port bound for the running box's forward of guestPort.
func (b *Box) ForwardedPort(protocol Protocol, guestPort uint16) (uint16, error) {
	var port C.uint16_t
	err := b.h.use(func(p *C.boxlite_box_t) error {
		return takeError(C.boxlite_box_forwarded_port(&port, p, C.boxlite_protocol_t(protocol), C.uint16_t(guestPort)))
	})
	return uint16(port), err
}

// PortForwards lists the running box's forwards as bound.
func (b *Box) PortForwards() ([]Port, error) {
	var ports []Port
	err := b.h.use(func(p *C.boxlite_box_t) error {
		var list *C.boxlite_port_forward_list_t
		if err := takeError(C.boxlite_box_port_forwards(&list, p)); err != nil {
			return err
		}
		defer C.boxlite_port_forward_list_free(list)
		var n C.size_t
		if err := takeError(C.boxlite_port_forward_list_len(&n, list)); err != nil {
			return err
		}
		for i := C.size_t(0); i < n; i++ {
			f := C.bx_port_forward_init()
			if err := takeError(C.boxlite_port_forward_list_get(&f, list, i)); err != nil {
				return err
			}
			ports = append(ports, Port{Protocol: Protocol(f.protocol), HostAddr: C.GoString(f.host_addr),
				HostPort: uint16(f.host_port), GuestPort: uint16(f.guest_port)})
		}
		return nil
	})
	return ports, err
}

// Metrics are the box's figures.
type Metrics struct {
	Boots             uint64
	LastBoot          time.Duration
	ExecutionsStarted uint64
	ExecutionsFailed  uint64
	BytesOut, BytesIn uint64
}

// Metrics reads the box's figures.
func (b *Box) Metrics() (Metrics, error) {
	var m Metrics
	err := b.h.use(func(p *C.boxlite_box_t) error {
		c := C.bx_box_metrics_init()
		if err := takeError(C.boxlite_box_metrics(&c, p)); err != nil {
			return err
		}
		m = Metrics{Boots: uint64(c.boots), LastBoot: time.Duration(float64(c.last_boot_ms) * float64(time.Millisecond)),
			ExecutionsStarted: uint64(c.executions_started), ExecutionsFailed: uint64(c.executions_failed),
			BytesOut: uint64(c.bytes_out), BytesIn: uint64(c.bytes_in)}
		return nil
	})
	return m, err
}

func itoa(i int) string { return strconv.Itoa(i) }
