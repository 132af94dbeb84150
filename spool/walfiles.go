package spool

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// walFiles follows Badger's write-ahead logs, NNNNN.mem in its directory,
// numbered in the order they are started. DB.Sync syncs only the active
// one; a commit that finds the memtable full starts a new log and leaves
// the old one, with whatever unsynced commits it holds, until Badger has
// flushed it to a synced table and deleted it. Spool.write syncs such a
// log itself as soon as it sees that a commit started a new one.
type walFiles struct {
	dir    string
	active int // the number of the newest log seen
}

// walExt is the extension of Badger's write-ahead logs (memFileExt).
const walExt = ".mem"

// newWALFiles finds the active log of the database in dir.
func newWALFiles(dir string) (*walFiles, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	w := &walFiles{dir: dir}
	for _, e := range entries {
		if n, ok := strings.CutSuffix(e.Name(), walExt); ok {
			if fid, err := strconv.Atoi(n); err == nil {
				w.active = max(w.active, fid)
			}
		}
	}
	return w, nil
}

func (w *walFiles) path(fid int) string {
	return filepath.Join(w.dir, fmt.Sprintf("%05d%s", fid, walExt))
}

// syncRotated syncs the logs left behind by the ones started since the last
// call, those still there: a flushed one is gone, its commits in a synced
// table. It costs a stat when no log was started.
func (w *walFiles) syncRotated() error {
	next := w.active
	for {
		if _, err := os.Stat(w.path(next + 1)); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				break
			}
			return err
		}
		next++
	}
	for fid := w.active; fid < next; fid++ {
		if err := syncFile(w.path(fid)); err != nil {
			return err
		}
	}
	w.active = next
	return nil
}

// syncFile fsyncs the file at path, if it still exists. Pages written
// through another process's or Badger's mapping are synced too.
func syncFile(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
