"""Background pushes to the retailer's app: FCM (Android), APNs (iOS) and Web Push (browsers).

Each adapter speaks one push service's real protocol and turns its answer into a `PushResult`, so
the offer engine decides on retries and dropped registrations without knowing which service it used.
"""
