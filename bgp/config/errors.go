package config

import (
	"errors"
	"fmt"
)

var (
	errNoPeerIP            = errors.New("neither peerIP nor peerSelector is set")
	errPasswordUnavailable = errors.New("a password is configured but no password reader was given")
)

type peerIPError struct{ s string }

func (e *peerIPError) Error() string {
	return fmt.Sprintf("parse peerIP %q: want IP, IP:port or [IPv6]:port", e.s)
}
