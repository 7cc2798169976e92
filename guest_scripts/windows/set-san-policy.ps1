# guestprep-script: set-san-policy
# guestprep-output: json
# Sets the SAN policy so disks seen on the new controller come online (journaled).
$ParamsJson = [string]$args[0]
$p = ConvertFrom-Json -InputObject $ParamsJson
$codes = @{ OnlineAll = 1; OfflineShared = 2; OfflineAll = 3; OfflineInternal = 4 }
$key = 'HKLM:\SYSTEM\CurrentControlSet\Services\partmgr\Parameters'
$before = Get-RegistryValueOrNull -Path $key -Name 'SanPolicy'
$want = $codes[[string]$p.policy]
$steps = @()
if ($before -ne $want) {
    Add-JournalEntry -Operation 'windows.san_policy' -Kind 'registry_set' -Target ($key + '\SanPolicy') -Detail @{ path = $key; name = 'SanPolicy'; before = $before; after = $want }
    if (Get-Command -Name 'Set-StorageSetting' -ErrorAction SilentlyContinue) {
        try { Set-StorageSetting -NewDiskPolicy ([string]$p.policy) } catch { $null = New-ItemProperty -Path $key -Name 'SanPolicy' -Value $want -PropertyType DWord -Force }
    } else {
        $null = New-ItemProperty -Path $key -Name 'SanPolicy' -Value $want -PropertyType DWord -Force
    }
    $after = Get-RegistryValueOrNull -Path $key -Name 'SanPolicy'
    if ($after -ne $want) { throw ('read back SanPolicy = ' + $after + ', expected ' + $want) }
    $steps += [ordered]@{ target = 'SanPolicy'; changed = $true; before = $before; after = $want }
}
Write-Result -Value ([ordered]@{ ok = $true; steps = $steps })
