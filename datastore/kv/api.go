package kv

import (
	"errors"
	"time"
)

// KV is one key with its value and revisions as etcd reports them.
type KV struct {
	Key            string
	Value          []byte
	Revision       int64 // mod revision: the version a conditional write must name
	CreateRevision int64
}

// Errors a caller tells apart with errors.Is; every returned error wraps at most one of them.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
	ErrConflict = errors.New("revision conflict")
)

// Config says how to reach etcd.
type Config struct {
	Endpoints      []string
	CAFile         string
	CertFile       string
	KeyFile        string
	Username       string
	Password       string
	DialTimeout    time.Duration // default 5s
	RequestTimeout time.Duration // per call when ctx has no deadline; default 10s
}

// OpKind is what one operation of a transaction does.
type OpKind int

const (
	OpCreate OpKind = iota // key must not exist
	OpUpdate               // key must exist at Rev
	OpDelete               // key must exist at Rev (Rev 0: delete whatever is there, if anything)
	OpCheck                // no write: key must be at Rev (Rev 0: key must not exist)
	// OpCheckPrefix writes nothing: no key under the prefix Key may have been created or changed
	// after Rev (deletions are not seen). It makes "nothing new since I listed" part of a commit.
	OpCheckPrefix
	// OpPut writes Value whatever the key holds, if anything: no condition (status keys an agent
	// alone writes, batched into one transaction).
	OpPut
)

// Op is one conditional step of an all-or-nothing Commit.
type Op struct {
	Kind  OpKind
	Key   string
	Value []byte
	Rev   int64
}

// UpdateType says what happened to a key.
type UpdateType int

const (
	UpdatePut UpdateType = iota
	UpdateDelete
)

// Update is one change delivered by a Syncer. For deletes KV.Value is nil.
type Update struct {
	Type UpdateType
	KV   KV
}

// Status is a Syncer's state as Felix's syncers report it.
type Status int

const (
	StatusWaitForDatastore Status = iota
	StatusResyncInProgress
	StatusInSync
)

// Callbacks receive a Syncer's output, always from one goroutine, in order.
type Callbacks interface {
	OnStatus(Status)
	OnUpdates([]Update)
}

func (t UpdateType) String() string {
	switch t {
	case UpdatePut:
		return "put"
	case UpdateDelete:
		return "delete"
	}
	return "unknown"
}

func (s Status) String() string {
	switch s {
	case StatusWaitForDatastore:
		return "wait-for-datastore"
	case StatusResyncInProgress:
		return "resync-in-progress"
	case StatusInSync:
		return "in-sync"
	}
	return "unknown"
}
