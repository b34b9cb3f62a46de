package api

import (
	"errors"
	"fmt"
	"net/http"
)

// Errors across the API. A failed request answers with an HTTP status and
// the body {"error": "a sentence for people", "code": "no-such-peer"}.
// Callers branch on the code, never on the sentence: the client returns an
// *Error whose Unwrap gives the code's sentinel, so
//
//	if errors.Is(err, api.ErrNoSuchPeer) { ... }
//
// works on both sides of the socket: the daemon's own errors are *Error
// values made by Errorf, or wrap a sentinel.

// Code is the kind of failure, the part of an API error callers branch on.
type Code string

// The codes. The set is small on purpose; a new one is added only when a
// caller needs to tell it apart.
const (
	CodeNoSuchPeer      Code = "no-such-peer"     // the target names no node this node knows
	CodeNotFound        Code = "not-found"        // another named thing (friend, link, node of the user, policy version) is unknown
	CodeNotAdmin        Code = "not-admin"        // it needs the user key, which this node does not hold
	CodeInvalidArgument Code = "invalid-argument" // a parameter, code or document the daemon cannot use
	CodeConflict        Code = "conflict"         // the node's state forbids it (exists already, removing itself)
	CodeUnavailable     Code = "unavailable"      // no answer in time, no path yet, the node is stopping
	CodeInternal        Code = "internal"         // the daemon failed (state directory, I/O)
	// CodeNotRunning is the client's own: no daemon answers on the socket
	// (ErrNotRunning). The CLI reports it under --json like the others.
	CodeNotRunning Code = "not-running"
)

// The sentinels, one per code: errors.Is(err, ErrNotAdmin) holds for every
// error of code CodeNotAdmin, from the client or inside the daemon.
var (
	ErrNoSuchPeer      = errors.New("no such peer")
	ErrNotFound        = errors.New("not found")
	ErrNotAdmin        = errors.New("not an admin node")
	ErrInvalidArgument = errors.New("invalid argument")
	ErrConflict        = errors.New("conflict")
	ErrUnavailable     = errors.New("unavailable")
	ErrInternal        = errors.New("internal error")
)

var sentinels = []struct {
	code Code
	err  error
}{
	{CodeNoSuchPeer, ErrNoSuchPeer},
	{CodeNotFound, ErrNotFound},
	{CodeNotAdmin, ErrNotAdmin},
	{CodeInvalidArgument, ErrInvalidArgument},
	{CodeConflict, ErrConflict},
	{CodeUnavailable, ErrUnavailable},
	{CodeInternal, ErrInternal},
	{CodeNotRunning, ErrNotRunning},
}

// sentinel is the sentinel of code c, nil for a code this package does not know.
func sentinel(c Code) error {
	for _, s := range sentinels {
		if s.code == c {
			return s.err
		}
	}
	return nil
}

// Error is an API failure of a known kind.
type Error struct {
	Code    Code
	Message string // one sentence for people: what was wrong, what to do
	err     error  // in the daemon: Errorf's fmt.Errorf error, which unwraps to what %w wrapped
}

func (e *Error) Error() string { return e.Message }

// Unwrap gives the code's sentinel (none for a code this client does not
// know) and, in the daemon, the error Errorf wrapped.
func (e *Error) Unwrap() []error {
	var out []error
	if s := sentinel(e.Code); s != nil {
		out = append(out, s)
	}
	if e.err != nil {
		out = append(out, e.err)
	}
	return out
}

// Errorf returns an *Error of code c whose message is fmt.Errorf(format,
// a...)'s; a %w verb wraps as it does for fmt.Errorf.
func Errorf(c Code, format string, a ...any) error {
	err := fmt.Errorf(format, a...)
	return &Error{Code: c, Message: err.Error(), err: err}
}

// CodeOf is the code of err: that of the first *Error in its chain, else
// that of the first sentinel it wraps, else "".
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	for _, s := range sentinels {
		if errors.Is(err, s.err) {
			return s.code
		}
	}
	return ""
}

// HTTPStatus is the status the daemon answers with for code c.
func HTTPStatus(c Code) int {
	switch c {
	case CodeNoSuchPeer, CodeNotFound:
		return http.StatusNotFound
	case CodeNotAdmin:
		return http.StatusForbidden
	case CodeInvalidArgument:
		return http.StatusBadRequest
	case CodeConflict:
		return http.StatusConflict
	case CodeUnavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// codeOfStatus is the code of an error body without one, from a daemon
// older than codes (the binary was upgraded, the daemon not yet
// restarted): the statuses it used meant these.
func codeOfStatus(status int) Code {
	switch status {
	case http.StatusNotFound: // only /v1/ip and /v1/ping used it: an unknown target
		return CodeNoSuchPeer
	case http.StatusForbidden:
		return CodeNotAdmin
	case http.StatusBadRequest:
		return CodeInvalidArgument
	case http.StatusGatewayTimeout:
		return CodeUnavailable
	}
	return CodeInternal
}

// ErrorBody is the JSON body of a failed request.
type ErrorBody struct {
	Error string `json:"error"`
	Code  Code   `json:"code,omitempty"`
}
