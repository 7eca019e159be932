"""The download runtime of one server instance: claims jobs, runs DepotDownloader, packs the zips.

    dispatcher.Dispatcher   claims jobs while it has room, keeps the leases, runs retention, hands
                            the jobs back on stop; starts QR logins and routes Steam Guard codes
      job.JobRun            one claimed job: the run, its outcome, the account's health
        journal.Journal     the job's progress and log lines, written in small batches
      qr_login.QrLogin      one QR login of a Steam account
    context.WorkerContext   what jobs and QR logins use (sessions, settings, clock, ...): none of
                            them imports the dispatcher

Side effects of their transactions (events to watchers, waking the dispatcher, deleting files) go
through core.after_commit like everyone else's.
"""
