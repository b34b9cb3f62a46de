// Package sdnotify speaks systemd's notify protocol (sd_notify(3)): a
// service of Type=notify tells the service manager it is ready, what it is
// doing, and (with WatchdogSec=) that it is alive, by sending datagrams
// of NAME=VALUE lines to the unix datagram socket named by $NOTIFY_SOCKET.
// It is a few lines, so glow has it rather than a dependency.
package sdnotify

import (
	"errors"
	"net"
	"os"
	"strconv"
	"time"
)

// Common states.
const (
	Ready    = "READY=1"
	Stopping = "STOPPING=1"
	Watchdog = "WATCHDOG=1"
)

// Notify sends state (one or more NAME=VALUE lines) to the service manager.
// It reports false, and no error, when there is none ($NOTIFY_SOCKET unset:
// not run by systemd, or not as Type=notify). An abstract socket name
// starts with '@'.
func Notify(state string) (bool, error) {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return false, nil
	}
	if path[0] != '/' && path[0] != '@' {
		return false, errors.New("sdnotify: NOTIFY_SOCKET is neither a path nor an abstract name")
	}
	addr := &net.UnixAddr{Name: path, Net: "unixgram"}
	if path[0] == '@' {
		addr.Name = "\x00" + path[1:]
	}
	c, err := net.DialUnix("unixgram", nil, addr)
	if err != nil {
		return false, err
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return false, err
	}
	return true, nil
}

// WatchdogInterval is the watchdog timeout the service manager set
// (WatchdogSec=, given as $WATCHDOG_USEC), or 0 when there is none or it
// is meant for another process ($WATCHDOG_PID). Send Watchdog at about
// half this interval.
func WatchdogInterval() time.Duration {
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return 0
	}
	us, err := strconv.ParseUint(os.Getenv("WATCHDOG_USEC"), 10, 63)
	if err != nil || us == 0 {
		return 0
	}
	return time.Duration(us) * time.Microsecond
}
