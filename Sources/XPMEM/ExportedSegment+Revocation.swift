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
        if hugePages == .hugeTLB, !Self.hugeTLBPoolHoldsASecondCopy(of: size) {
            return try moveThroughPrivateCopy(base: base, attributes: attributes)
        }
        let file = try XPMEMBroker.makeFile(name: name, size: size, hugePages: hugePages)
        let staging = try mapForFilling(file)
        try copyData(into: staging)
        staging.unmap()
        // If the broker refuses, the old file goes back in place and nothing has changed for anyone.
        try install(file, at: base, attributes: attributes, ifRefused: .mapOldFileBack)
    }

    /// What `install` does when the broker refuses the fresh file.
    private enum RefusalFallback {
        /// The old file, intact, goes back in place.
        case mapOldFileBack
        /// The old file was emptied: the fresh file's bytes become private memory in place.
        case makeFreshBytesPrivate
    }

    /// Puts the filled fresh `file` in place here, then has the broker hand it out from now on; it is
    /// the segment's file after that.
    private func install(
        _ file: consuming OwnedDescriptor, at base: UnsafeMutableRawPointer, attributes: MappingAttributes,
        ifRefused fallback: RefusalFallback
    ) throws(XPMEMError) {
        let readOnly: OwnedDescriptor
        do {
            readOnly = try MemoryFile.reopenReadOnly(file)
        } catch {
            throw XPMEMError.system("reopening the fresh memfd read-only", error)
        }
        // In place here first, then the broker.
        let moved = try mapInPlace(file, at: base)
        do {
            try setAgain(attributes, on: "its fresh memfd")
            try broker.channel.requestDone(.replaceSegmentFiles(id), passing: [file.fileDescriptor, readOnly.fileDescriptor])
        } catch {
            switch fallback {
            case .mapOldFileBack: mapOldFileBack(at: base, attributes: attributes)
            // Its mapping may be inaccessible by now (the attributes): read from the file.
            case .makeFreshBytesPrivate: try? makeFileBytesPrivate(file, at: base)
            }
            throw error
        }
        var fresh = Optional(file)
        state.withLock { state in
            state.file = fresh.take()
            state.mappingReplaced(by: moved)
        }
    }

    /// Whether the hugetlb pool has unreserved pages for a second copy of a segment of `size` bytes.
    private static func hugeTLBPoolHoldsASecondCopy(of size: Int) -> Bool {
        guard let pool = HugeTLBPool.current() else { return false }
        return pool.availablePages >= (size + pool.pageSize - 1) / pool.pageSize
    }

    /// A fresh file mapped here to be filled, with the segment's placement (a hugetlb file keeps no
    /// policy of its own, so its pages are allocated now, where the placement says).
    private func mapForFilling(_ file: borrowing OwnedDescriptor) throws(XPMEMError) -> MemoryMapping {
        let staging: MemoryMapping
        do {
            staging = try MemoryMapping.mapShared(file, length: size, protection: .readWrite)
        } catch {
            throw XPMEMError.system("mmap of a fresh memfd for segment \(id)", error)
        }
        let placement = state.withLock { $0.placement }
        try placement.apply(to: staging.base, length: size)
        if hugePages == .hugeTLB, placement != .firstTouch {
            do {
                try PageRange(base: staging.base, length: size, pageSize: hugePages.pageSize).allocateEveryPage()
            } catch {
                throw XPMEMError(.resourceExhausted,
                    "the hugetlb pool cannot back segment \(id)'s fresh file with placement \(placement) (\(error))")
            }
        }
        return staging
    }

    private func mapInPlace(_ file: borrowing OwnedDescriptor, at base: UnsafeMutableRawPointer)
        throws(XPMEMError) -> UnsafeMutableRawBufferPointer
    {
        do {
            return try MemoryMapping.mapShared(file, length: size, protection: .readWrite, placement: .replacing(base))
                .relinquish()
        } catch {
            throw XPMEMError.system("mapping the fresh memfd of segment \(id) in place", error)
        }
    }

    /// A hugetlb segment whose pool has no room for a second copy: its bytes become private memory in
    /// place first (this process reads them there meanwhile), then the old file gives every page and
    /// reservation back to the pool (which cuts every mapping of it off them, the laggard's included;
    /// importers in the window sleep on the holes), and a fresh file takes them with the bytes.
    ///
    /// The application's attributes (`mprotect` among them) go on the fresh mapping only, at the end:
    /// the private copy stays readable, so that the bytes can be copied out of it.
    ///
    /// Once the bytes are private, any failure (the fresh file cannot be had because something took
    /// the pool meanwhile, or the broker refuses it) leaves them private here, lets the emptied file
    /// go, and withdraws the segment (`moveToFreshFile(thenEnd:)`): importers lose it, none keeps a
    /// live alias, nothing of the exporter's is lost.
    private func moveThroughPrivateCopy(base: UnsafeMutableRawPointer, attributes: MappingAttributes)
        throws(XPMEMError)
    {
        do {
            let copy = try MemoryMapping.anonymous(length: size)
            try copyData(into: copy)
            let moved = try copy.move(replacing: base).relinquish()
            state.withLock { $0.mappingReplaced(by: moved) }
        } catch let error as XPMEMError {
            throw error
        } catch {
            throw XPMEMError.system("moving a private copy of segment \(id) in place", error as? Errno ?? .ioError)
        }
        do throws(XPMEMError) {
            try emptyOldFile()
            let file = try XPMEMBroker.makeFile(name: name, size: size, hugePages: hugePages)
            let staging = try mapForFillingAfterEmptying(file)
            MemoryFile.copyNonZeroPages(from: base, to: staging.base, length: size, pageSize: hugePages.pageSize)
            staging.unmap()
            try install(file, at: base, attributes: attributes, ifRefused: .makeFreshBytesPrivate)
        } catch {
            state.withLock { $0.file = nil }
            try? setAgain(attributes, on: "its private copy")
            throw XPMEMError(.resourceExhausted,
                "segment \(id) could not move to a fresh hugetlb file (\(error.message)); it is withdrawn, and its bytes stay private in this process")
        }
    }

    /// Every page and reservation of the old file back to the pool: its holes allocated first (that
    /// uses the file's own reservations), then everything punched (a punch returns only the
    /// reservations of pages that exist).
    private func emptyOldFile() throws(XPMEMError) {
        try withCurrentFile("giving segment \(id)'s hugetlb pages back to the pool") { old throws(Errno) in
            try? MemoryFile.allocatePages(of: old, in: 0..<size)
            try MemoryFile.dropPages(of: old, in: 0..<UInt64(size))
        }
    }

    /// Runs `body` on the segment's current file, under the state lock; `what` names the step in the
    /// error it throws.
    private func withCurrentFile(_ what: String, _ body: (borrowing OwnedDescriptor) throws(Errno) -> Void)
        throws(XPMEMError)
    {
        let failure: XPMEMError? = state.withLock { state in
            switch state.file {
            case .some(let file):
                do throws(Errno) {
                    try body(file)
                    return nil
                } catch {
                    return XPMEMError.system(what, error)
                }
            case .none:
                return XPMEMError(.alreadyClosed, "segment \(id) has no file to move any more")
            }
        }
        if let failure { throw failure }
    }

    /// `mapForFilling`, tried again twice after emptying the old file once more: the revoked importer
    /// still maps it, and each of its touches takes a free pool page into it until the fresh file has
    /// reserved its own.
    private func mapForFillingAfterEmptying(_ file: borrowing OwnedDescriptor) throws(XPMEMError) -> MemoryMapping {
        var attempt = 1
        while true {
            do {
                return try mapForFilling(file)
            } catch {
                guard attempt < 3 else { throw error }
                attempt += 1
                try emptyOldFile()
            }
        }
    }

    /// The bytes of `file` (mapped at `base`) copied into private anonymous memory moved in place,
    /// read with `pread`, which the mapping's protection does not stop.
    private func makeFileBytesPrivate(_ file: borrowing OwnedDescriptor, at base: UnsafeMutableRawPointer)
        throws(XPMEMError)
    {
        do {
            let copy = try MemoryMapping.anonymous(length: size)
            try MemoryFile.copyNonZeroPages(of: file, length: size, pageSize: hugePages.pageSize, into: copy.base)
            let moved = try copy.move(replacing: base).relinquish()
            state.withLock { $0.mappingReplaced(by: moved) }
        } catch {
            throw XPMEMError.system("making segment \(id)'s bytes private again", error)
        }
    }

    /// Whether a failed move left the segment without a file (a hugetlb move through a private copy):
    /// it is then withdrawn.
    var lostItsFile: Bool {
        state.withLock { state in
            switch state.file {
            case .some: false
            case .none: true
            }
        }
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
        let destination = staging.base
        try withCurrentFile("copying the data of segment \(id)") { old throws(Errno) in
            if hugePages == .hugeTLB {
                try MemoryFile.copyNonZeroPages(of: old, length: size, pageSize: hugePages.pageSize, into: destination)
                return
            }
            let source = try MemoryMapping.mapShared(old, length: size, protection: .read)
            for extent in try MemoryFile.dataExtents(of: old, length: size) {
                (destination + extent.lowerBound).copyMemory(from: source.base + extent.lowerBound, byteCount: extent.count)
            }
        }
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
