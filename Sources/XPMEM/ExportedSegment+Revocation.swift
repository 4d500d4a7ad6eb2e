import Synchronization
import SystemPackage
import XPMEMSystem

extension ExportedSegment {
    /// Revocation made real: once the segment is removed while this process lives on, its bytes move
    /// to private anonymous memory at the same addresses, so that a memfd an importer kept (ignoring
    /// `released`) aliases nothing live any more. With that descriptor it can still read the bytes as
    /// they were at the removal and write bytes nobody reads; it sees none of the exporter's later
    /// writes, and the exporter none of its writes.
    ///
    /// No other thread may write the segment meanwhile (such a write could be lost), as for
    /// `exportRange`. The pages land where first touch puts them; a placement is not kept.
    func makePagesPrivate() throws(XPMEMError) {
        guard let base = UnsafeMutableRawPointer(bitPattern: baseAddress) else { return }
        let copy: MemoryMapping
        do {
            copy = try MemoryMapping.anonymous(length: size)
        } catch {
            throw XPMEMError.system("mmap of a private copy of segment \(id)", error)
        }
        let attributes = try readMappingAttributes()
        try copyData(into: copy)
        let moved: UnsafeMutableRawBufferPointer
        do {
            moved = try copy.move(replacing: base).relinquish()
        } catch {
            throw XPMEMError.system("moving the private copy of segment \(id) in place", error)
        }
        state.withLock { $0.mappingReplaced(by: moved) }
        try setAgain(attributes, on: "its private copy")
    }

    /// Revocation made real while the segment stays shared: after an importer missed an invalidation
    /// deadline (its grants were revoked, but it still holds the memfd), the bytes move to a fresh memfd
    /// mapped at the same addresses. The broker hands out the new file from now on and sends it to
    /// every importer still mapping the segment, which maps it in place of the old one when the
    /// window in force ends. The old file keeps the bytes as they were now, which nobody reads any
    /// more; what the revoked importer writes there reaches no one.
    ///
    /// Runs inside an invalidation window over the whole segment (no importer writes meanwhile); no
    /// other thread of this process may write it either, as for `exportRange`.
    func moveToFreshFile() throws(XPMEMError) {
        guard let base = UnsafeMutableRawPointer(bitPattern: baseAddress) else { return }
        // Before the mapping goes: the broker forgets every hint (so none is trusted without
        // protection, however the move ends), and none is taken until the move is over. No other
        // thread writes meanwhile (see above), so no write goes unreported.
        let tracker = state.withLock { state in
            state.movingFile = true
            return state.freePageTracker.take()
        }
        tracker?.forgetHintsAndStop()
        defer { state.withLock { $0.movingFile = false } }
        let attributes = try readMappingAttributes()
        // A hugetlb pool sized for its segments has no room for a second copy: the bytes wait in
        // anonymous memory while the old file gives its pages back (which also cuts every mapping of
        // it off them, the laggard's included), and the fresh file takes them.
        let holding: UnsafeMutableRawBufferPointer? = hugePages == .hugeTLB ? try holdDataAndEmptyOldFile() : nil
        defer { if let holding { _ = MemoryMapping.adopting(holding) } }  // unmapped when this returns
        let file: OwnedDescriptor
        do {
            file = try XPMEMBroker.makeFile(name: name, size: size, hugePages: hugePages)
        } catch {
            if let holding { try restoreOldFile(from: holding) }
            throw error
        }
        let staging: MemoryMapping
        do {
            staging = try MemoryMapping.mapShared(file, length: size, protection: .readWrite)
        } catch {
            if let holding { try restoreOldFile(from: holding) }
            throw XPMEMError.system("mmap of a fresh memfd for segment \(id)", error)
        }
        do {
            try state.withLock { $0.placement }.apply(to: staging.base, length: size)
        } catch {
            staging.unmap()
            if let holding {
                try? MemoryFile.dropPages(of: file, in: 0..<UInt64(size))
                try restoreOldFile(from: holding)
            }
            throw error
        }
        if let holding {
            MemoryFile.copyNonZeroPages(from: holding.baseAddress!, to: staging.base, length: size,
                                        pageSize: hugePages.pageSize)
        } else {
            try copyData(into: staging)
        }
        staging.unmap()
        let readOnly: OwnedDescriptor
        do {
            readOnly = try MemoryFile.reopenReadOnly(file)
        } catch {
            if let holding {
                try? MemoryFile.dropPages(of: file, in: 0..<UInt64(size))
                try restoreOldFile(from: holding)
            }
            throw XPMEMError.system("reopening the fresh memfd read-only", error)
        }
        // In place here first, then the broker: if the broker refuses, the old file goes back in place
        // and nothing has changed for anyone.
        let moved: UnsafeMutableRawBufferPointer
        do {
            moved = try MemoryMapping.mapShared(file, length: size, protection: .readWrite, placement: .replacing(base))
                .relinquish()
        } catch {
            if let holding {
                try? MemoryFile.dropPages(of: file, in: 0..<UInt64(size))
                try restoreOldFile(from: holding)
            }
            throw XPMEMError.system("mapping the fresh memfd of segment \(id) in place", error)
        }
        do {
            try setAgain(attributes, on: "its fresh memfd")
            try broker.channel.requestDone(.replaceSegmentFiles(id), passing: [file.fileDescriptor, readOnly.fileDescriptor])
        } catch {
            mapOldFileBack(at: base, attributes: attributes)
            if let holding {
                try? MemoryFile.dropPages(of: file, in: 0..<UInt64(size))
                try restoreOldFile(from: holding)
            }
            throw error
        }
        var fresh = Optional(file)
        state.withLock { state in
            state.file = fresh.take()
            state.mappingReplaced(by: moved)
        }
    }

    /// For a hugetlb segment's move: its bytes (the pages that are not all zeros) copied into anonymous
    /// memory, then every page of the old file punched out, back to the pool. The caller unmaps what
    /// this returns.
    private func holdDataAndEmptyOldFile() throws(XPMEMError) -> UnsafeMutableRawBufferPointer {
        let holding: MemoryMapping
        do {
            holding = try MemoryMapping.anonymous(length: size)
        } catch {
            throw XPMEMError.system("mmap of anonymous memory to hold segment \(id) while it moves", error)
        }
        try copyData(into: holding)
        let emptied: XPMEMError? = state.withLock { state in
            switch state.file {
            case .some(let old):
                do throws(Errno) {
                    try MemoryFile.dropPages(of: old, in: 0..<UInt64(size))
                    return nil
                } catch {
                    return XPMEMError.system("giving segment \(id)'s hugetlb pages back to the pool", error)
                }
            case .none:
                return XPMEMError(.alreadyClosed, "segment \(id) has no file to move any more")
            }
        }
        if let emptied { throw emptied }
        return holding.relinquish()
    }

    /// A hugetlb move that failed after the old file gave its pages back (and the fresh file, if it
    /// was made, gave them back in turn): the old file takes them again with the bytes held meanwhile,
    /// allocated first so that a pool that someone else emptied in between is an error here rather
    /// than SIGBUS. The segment is then as before the move.
    private func restoreOldFile(from holding: UnsafeMutableRawBufferPointer) throws(XPMEMError) {
        let restored: XPMEMError? = state.withLock { state in
            switch state.file {
            case .some(let old):
                do throws(Errno) {
                    try MemoryFile.allocatePages(of: old, in: 0..<size)
                    let target = try MemoryMapping.mapShared(old, length: size, protection: .readWrite)
                    MemoryFile.copyNonZeroPages(from: holding.baseAddress!, to: target.base, length: size,
                                                pageSize: hugePages.pageSize)
                    return nil
                } catch {
                    return XPMEMError(.resourceExhausted,
                        "segment \(id)'s move failed and its hugetlb file could not take its pages back from the pool (\(error)); its bytes are lost to importers")
                }
            case .none:
                return nil
            }
        }
        if let restored { throw restored }
    }

    /// What the application set on its mapping of the segment (mprotect, mlock, madvise), which a
    /// new mapping over it drops: read before replacing it, set again after (`setAgain`).
    private func readMappingAttributes() throws(XPMEMError) -> MappingAttributes {
        do {
            return try MappingAttributes.read(start: baseAddress, length: size)
        } catch {
            throw XPMEMError.system("reading the attributes of segment \(id)'s mapping", error)
        }
    }

    private func setAgain(_ attributes: MappingAttributes, on what: String) throws(XPMEMError) {
        do {
            try attributes.apply()
        } catch {
            throw XPMEMError.system("setting segment \(id)'s mapping attributes again on \(what)", error)
        }
    }

    /// Copies the segment's data into `staging`, a mapping of its fresh file: only what has pages
    /// (copying a hole would give it a page of zeros in both files), and from a mapping of the old
    /// file of our own, so that a part the application made inaccessible (`mprotect`) is copied too.
    /// A hugetlb file is read instead (`pread`: its holes read as zeros without taking pool pages, and
    /// it has no `SEEK_DATA`), and its all-zero pages are skipped.
    private func copyData(into staging: borrowing MemoryMapping) throws(XPMEMError) {
        let copied: XPMEMError? = state.withLock { state in
            switch state.file {
            case .some(let old):
                do throws(Errno) {
                    if hugePages == .hugeTLB {
                        try MemoryFile.copyNonZeroPages(of: old, length: size, pageSize: hugePages.pageSize,
                                                        into: staging.base)
                        return nil
                    }
                    let source = try MemoryMapping.mapShared(old, length: size, protection: .read)
                    for extent in try MemoryFile.dataExtents(of: old, length: size) {
                        (staging.base + extent.lowerBound).copyMemory(from: source.base + extent.lowerBound,
                                                                      byteCount: extent.count)
                    }
                    return nil
                } catch {
                    return XPMEMError.system("copying the data of segment \(id)", error)
                }
            case .none:
                return XPMEMError(.alreadyClosed, "segment \(id) has no file to move any more")
            }
        }
        if let copied { throw copied }
    }

    /// The broker refused the fresh file: the old one, which it still hands out, goes back in place,
    /// with what the application had set on it. Nothing was written meanwhile (the window holds
    /// importers, and no thread of ours may write).
    private func mapOldFileBack(at base: UnsafeMutableRawPointer, attributes: MappingAttributes) {
        state.withLock { state in
            switch state.file {
            case .some(let old):
                if let back = try? MemoryMapping.mapShared(old, length: size, protection: .readWrite, placement: .replacing(base)) {
                    _ = back.relinquish()
                    try? attributes.apply()
                }
            case .none:
                break
            }
        }
    }
}

extension ExportedSegment.State {
    /// The mapping at the segment's base was replaced by `moved` (a private copy, or the fresh file):
    /// what the library owned there is now `moved`; a caller's range (exportRange) stays the caller's.
    /// Free-page hints end with the old mapping, whose write protection went with it (and the broker
    /// forgets them with the old file).
    mutating func mappingReplaced(by moved: UnsafeMutableRawBufferPointer) {
        freePageTracker.take()?.forgetHintsAndStop()
        guard let replaced = ownedMapping.take() else { return }
        _ = replaced.relinquish()
        ownedMapping = MemoryMapping.adopting(moved)
    }
}
