package member

import "glow/internal/wire"

// ForgetCert and ForgetInfo drop the record s holds for id, so that a
// benchmark can apply the same record as new again.
func (s *Store) ForgetCert(id wire.NodeID) { delete(s.certs, id); s.changed() }

func (s *Store) ForgetInfo(id wire.NodeID) { delete(s.infos, id); s.changed() }
